"""The one DataLoader builder for training, validation and benchmarks.

Datasets here take a list of indices and return the whole batch ({"obs": {key: (B, ...)}, "action": (B, H, A)})
with one gather, so the loader skips per-sample collation (~2x faster than collating samples). torch only: the
trainer builds loaders for the toy dataset without importing the zarr layer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler


def make_loader(
    dataset: Dataset,
    batch_size: int | None = None,
    shuffle: bool = True,
    num_workers: int = 0,
    drop_last: bool = False,
    seed: int | None = None,
    batch_sampler: Sampler[list[int]] | None = None,
    **kwargs: Any,
) -> DataLoader:
    """Batches of `batch_size` (shuffled by `seed` when `shuffle`), or the index lists of `batch_sampler` (the
    trainer's resumable order), which then replaces batch_size/shuffle/drop_last/seed. `kwargs` go to DataLoader."""
    if batch_sampler is None:
        if batch_size is None:
            raise ValueError("make_loader: pass batch_size or batch_sampler")
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        base = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        batch_sampler = BatchSampler(base, batch_size=batch_size, drop_last=drop_last)
    return DataLoader(dataset, sampler=batch_sampler, batch_size=None, num_workers=num_workers, **kwargs)
