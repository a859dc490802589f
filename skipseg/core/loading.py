"""DataLoaders whose data errors reach the user as one clear line.

A `SkipsegError` raised in a DataLoader worker comes back to the main process re-wrapped with the
worker's whole traceback in its message. Here the worker returns the error as a value instead,
and the main process raises it again, message intact, whatever the number of workers.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, NamedTuple

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

    def __getitems__(self, items: list) -> list:
        """The batch's items in one call when the dataset offers one (`SeededView`), else one by one."""
        fetch = getattr(self.dataset, "__getitems__", None)
        if fetch is None:
            return [self[item] for item in items]
        try:
            return fetch(items)
        except SkipsegError as exc:
            return [LoadFailure(str(exc))]


class _Collate:
    """default_collate, then `finish` on the batch (e.g. `TrainAugmentation.finish_batch`); a
    failed item passes through as the batch. A class, not a closure: workers receive it pickled."""

    def __init__(self, finish: Callable[..., Any] | None) -> None:
        self.finish = finish

    def __call__(self, items: list) -> Any:
        for item in items:
            if isinstance(item, LoadFailure):
                return item
        batch = default_collate(items)
        return batch if self.finish is None else self.finish(*batch)


def guarded_batches(dataset: Dataset, batch_sampler: Sampler | Iterable, workers: int = 0,
                    pin_memory: bool = False, finish: Callable[..., Any] | None = None) -> Iterator:
    """Iterate the batches of `DataLoader(dataset, batch_sampler=...)`, re-raising data errors cleanly;
    `finish(*batch)`, if given, completes each collated batch (in the loader's workers, if any)."""
    loader = DataLoader(_Guarded(dataset), batch_sampler=batch_sampler, num_workers=workers,
                        pin_memory=pin_memory, collate_fn=_Collate(finish))
    for batch in loader:
        if isinstance(batch, LoadFailure):
            raise SkipsegError(batch.message)
        yield batch
