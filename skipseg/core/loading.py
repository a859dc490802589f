"""DataLoaders whose data errors reach the user as one clear line.

A `SkipsegError` raised in a DataLoader worker comes back to the main process re-wrapped with the
worker's whole traceback in its message. Here the worker returns the error as a value instead,
and the main process raises it again, message intact, whatever the number of workers.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, NamedTuple

from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from skipseg.errors import SkipsegError


class LoadFailure(NamedTuple):
    message: str


class _Guarded(Dataset):
    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: Any):
        try:
            return self.dataset[item]
        except SkipsegError as exc:
            return LoadFailure(str(exc))


def _collate(items: list) -> Any:
    for item in items:
        if isinstance(item, LoadFailure):
            return item
    return default_collate(items)


def guarded_batches(dataset: Dataset, batch_sampler: Sampler | Iterable, workers: int = 0,
                    pin_memory: bool = False) -> Iterator:
    """Iterate the batches of `DataLoader(dataset, batch_sampler=...)`, re-raising data errors cleanly."""
    loader = DataLoader(_Guarded(dataset), batch_sampler=batch_sampler, num_workers=workers,
                        pin_memory=pin_memory, collate_fn=_collate)
    for batch in loader:
        if isinstance(batch, LoadFailure):
            raise SkipsegError(batch.message)
        yield batch
