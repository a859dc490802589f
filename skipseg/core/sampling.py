"""Data order that can be resumed exactly, and per-sample augmentation seeds.

Why per-sample seeds: DataLoader workers draw augmentations from their own RNG streams, so the
augmentation a sample gets would depend on which worker loads it and on where a run was resumed.
Here every sample position in the run has its own seed, a pure function of (seed, epoch, position),
so the same run gives the same batches with any number of workers, after any resume, and split
over any number of ranks.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler


def _epoch_permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_samples, generator=generator)


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields this rank's micro-batches of `(dataset index, augmentation seed)` from `start_step` on.

    A global micro-batch is `batch_size × world_size` consecutive positions of the epoch's permutation;
    rank r takes positions r, r + W, r + 2W, … of it, so the union over ranks is exactly the global
    batch a single process with batch `batch_size × world_size` would take. Epochs drop the last
    incomplete global batch.
    """

    def __init__(self, num_samples: int, batch_size: int, total_steps: int, seed: int = 0,
                 start_step: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.global_batch = batch_size * world_size
        if num_samples < self.global_batch:
            raise ValueError(f"{num_samples} training samples < one global batch of {self.global_batch}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.total_steps = total_steps
        self.seed = seed
        self.start_step = start_step
        self.rank = rank
        self.world_size = world_size
        self.steps_per_epoch = num_samples // self.global_batch

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        permutation, epoch = None, -1
        for step in range(self.start_step, self.total_steps):
            step_epoch, within = divmod(step, self.steps_per_epoch)
            if step_epoch != epoch:
                epoch, permutation = step_epoch, _epoch_permutation(self.num_samples, self.seed, step_epoch)
            first = within * self.global_batch
            positions = range(first + self.rank, first + self.global_batch, self.world_size)
            yield [(int(permutation[p]), self._sample_seed(epoch, p)) for p in positions]

    def _sample_seed(self, epoch: int, position: int) -> int:
        return (self.seed * 2_654_435_761 + epoch * 1_000_003 + position) % (2**63 - 1)


class SeededView(Dataset):
    """Wraps a dataset whose random transforms draw from torch's RNG: item `(index, seed)` runs
    them under `seed` without disturbing the caller's RNG stream (dropout and the like)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only (what the transforms draw from): torch.manual_seed would also
            # queue a CUDA seeding with a captured stack on CUDA builds, costly once per sample.
            torch.default_generator.manual_seed(seed)
            return self.dataset[index]

    def __getitems__(self, items: list[tuple[int, int]]) -> list:
        """A batch's items (what DataLoader asks for): each under its own seed, the caller's RNG
        saved and restored once for the batch instead of once per item."""
        out = []
        with torch.random.fork_rng(devices=[]):
            for index, seed in items:
                torch.default_generator.manual_seed(seed)
                out.append(self.dataset[index])
        return out


class SizeGroupedBatchSampler(Sampler[list[int]]):
    """Evaluation batches of images that share a size (whole images at native size, no padding),
    keeping dataset order within a size; with `world_size` > 1 each rank takes every W-th batch."""

    def __init__(self, sizes: Sequence[tuple[int, int]], batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, size in enumerate(sizes):
            groups[tuple(size)].append(index)
        batches = [idx[i:i + batch_size] for idx in groups.values() for i in range(0, len(idx), batch_size)]
        batches.sort(key=lambda b: b[0])
        self.batches = batches[rank::world_size]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)
