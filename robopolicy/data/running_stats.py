"""Per-dimension min/max/mean/std accumulated batch by batch, so statistics of a stream need no copy of it.

Batches are merged with Chan et al.'s parallel update of (count, mean, M2), which stays accurate where
the naive sum of squares loses digits (large means, small spreads).
"""
from __future__ import annotations

import numpy as np

_SLICE_VALUES = 1 << 20


class RunningStats:
    """Statistics over the leading axis of every batch given to `update`; all batches share `shape[1:]`."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None
        self.min: np.ndarray | None = None
        self.max: np.ndarray | None = None

    def update(self, batch: np.ndarray) -> None:
        """Add the rows of `batch`, converted to float64 a slice of at most ~1 M values at a time."""
        batch = np.asarray(batch)
        row = max(1, int(np.prod(batch.shape[1:], dtype=np.int64)))
        step = max(1, _SLICE_VALUES // row)
        for start in range(0, len(batch), step):
            self._merge(batch[start : start + step].astype(np.float64))

    def _merge(self, x: np.ndarray) -> None:
        n = len(x)
        if n == 0:
            return
        mean, lo, hi = x.mean(axis=0), x.min(axis=0), x.max(axis=0)
        m2 = ((x - mean) ** 2).sum(axis=0)
        if self.mean is None or self.m2 is None or self.min is None or self.max is None:
            self.count, self.mean, self.m2, self.min, self.max = n, mean, m2, lo, hi
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.min, self.max = np.minimum(self.min, lo), np.maximum(self.max, hi)
        self.count = total

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (numpy's default ddof=0)."""
        if self.m2 is None:
            raise ValueError("no data: update() was never given a row")
        return np.sqrt(self.m2 / self.count)


def key_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Per-dimension float32 min/max/mean/std over the leading axis: the statistics of one key that
    `Policy.fit_normalizer` takes, computed one way for every dataset (and without a float64 copy of it)."""
    acc = RunningStats()
    acc.update(values)
    if acc.min is None or acc.max is None or acc.mean is None:
        raise ValueError("no data: statistics of an empty array")
    return {"min": acc.min.astype(np.float32), "max": acc.max.astype(np.float32),
            "mean": acc.mean.astype(np.float32), "std": acc.std.astype(np.float32)}
