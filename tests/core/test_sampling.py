"""Resumable data order: same batches after any resume, with any rank split, seeds per sample."""
from __future__ import annotations

import torch

from skipseg.core.sampling import ResumableBatchSampler, SeededView, SizeGroupedBatchSampler


def batches(**kwargs):
    return list(ResumableBatchSampler(**kwargs))


def test_resume_replays_the_same_batches():
    full = batches(num_samples=23, batch_size=4, total_steps=17, seed=5)
    tail = batches(num_samples=23, batch_size=4, total_steps=17, seed=5, start_step=9)
    assert tail == full[9:]
    assert len(full) == 17
    # each epoch (5 steps of 4 of 23) is a permutation without repeats; epochs differ
    first_epoch = [i for batch in full[:5] for i, _ in batch]
    assert len(set(first_epoch)) == 20
    assert [i for i, _ in full[0]] != [i for i, _ in full[5]]
    # augmentation seeds are unique per position
    seeds = [s for batch in full for _, s in batch]
    assert len(set(seeds)) == len(seeds)


def test_ranks_split_the_global_batch():
    single = batches(num_samples=30, batch_size=6, total_steps=8, seed=1)
    rank0 = batches(num_samples=30, batch_size=3, total_steps=8, seed=1, rank=0, world_size=2)
    rank1 = batches(num_samples=30, batch_size=3, total_steps=8, seed=1, rank=1, world_size=2)
    for whole, a, b in zip(single, rank0, rank1):
        assert sorted(whole) == sorted(a + b)


class RandomItems(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return index, torch.rand(()).item()


def test_seeded_view_is_reproducible_and_leaves_caller_rng_alone():
    view = SeededView(RandomItems())
    torch.manual_seed(0)
    expected_next = torch.rand(()).item()
    torch.manual_seed(0)
    a = view[(2, 123)]
    assert torch.rand(()).item() == expected_next
    assert view[(2, 123)] == a
    assert view[(2, 124)] != a
    # a batch at once (what DataLoader asks for): each item as alone, the caller's RNG untouched
    items = [(2, 123), (0, 7), (2, 124)]
    torch.manual_seed(0)
    assert view.__getitems__(items) == [view[item] for item in items]
    assert torch.rand(()).item() == expected_next


def test_size_grouped_batches_cover_every_image_once():
    sizes = [(45, 61), (64, 64), (45, 61), (45, 61), (64, 64), (10, 10)]
    sampler = SizeGroupedBatchSampler(sizes, batch_size=2)
    flat = [i for batch in sampler for i in batch]
    assert sorted(flat) == list(range(6))
    for batch in sampler:
        assert len({sizes[i] for i in batch}) == 1
    shards = [list(SizeGroupedBatchSampler(sizes, 2, rank=r, world_size=2)) for r in (0, 1)]
    assert sorted(i for shard in shards for b in shard for i in b) == list(range(6))
