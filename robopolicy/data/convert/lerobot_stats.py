"""Per-episode statistics as lerobot 0.4 stores them (the `stats/<feature>/<stat>` columns of meta/episodes), and
meta/stats.json as their aggregate, folded the way lerobot's `aggregate_stats` combines episodes.

One computation serves both: each episode's statistics are taken once, as it is written, and the dataset's are
merged from them, so no frame is kept. The stats are min, max, mean, std (population), count and the quantiles
q01 q10 q50 q90 q99; a low-dimensional feature has one value per dimension (flattened; a scalar feature one), an
image or video feature one per channel, shape (C, 1, 1), in [0, 1]. min and max keep the feature's dtype (int64
columns for integer features, as lerobot writes them), the others are float64.
Where lerobot approximates, these are numpy's over every frame of the episode: lerobot takes quantiles from a
5000-bin histogram and image statistics from a sample of downsampled frames (its count is then the frames
sampled). Quantiles here are numpy's default (linear interpolation between order statistics); an image's come
from a 256-bin count of each channel, which gives numpy's values exactly without a float copy of the pixels.
"""
from __future__ import annotations

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}  # lerobot's DEFAULT_QUANTILES
_SLICE_VALUES = 1 << 22  # pixels counted per np.bincount call (it widens them to int64)

Stats = dict[str, np.ndarray]


def episode_stats(arr: np.ndarray, visual: bool) -> Stats:
    """One feature's statistics over one episode's frames `arr` (T, ...); `visual`: uint8 (T, H, W, C) frames."""
    if visual:
        return _image_stats(arr)
    x = arr.reshape(len(arr), -1)
    stats = {"min": x.min(axis=0), "max": x.max(axis=0), "mean": x.mean(axis=0, dtype=np.float64),
             "std": x.std(axis=0, dtype=np.float64), "count": np.array([len(x)], dtype=np.int64)}
    qs = np.quantile(x.astype(np.float64, copy=False), list(QUANTILES.values()), axis=0)
    return stats | dict(zip(QUANTILES, qs, strict=True))


def _image_stats(frames: np.ndarray) -> Stats:
    channels = frames.shape[-1]
    pixels = frames.reshape(-1, channels)
    hist = np.zeros((channels, 256), dtype=np.int64)
    for start in range(0, len(pixels), _SLICE_VALUES):
        part = pixels[start : start + _SLICE_VALUES]
        for c in range(channels):
            hist[c] += np.bincount(part[:, c], minlength=256)
    values = np.arange(256, dtype=np.float64)
    n = len(pixels)
    mean = hist @ values / n
    var = (hist * (values - mean[:, None]) ** 2).sum(axis=1) / n
    present = hist > 0
    stats = {"min": present.argmax(axis=1).astype(np.float64), "max": 255.0 - present[:, ::-1].argmax(axis=1),
             "mean": mean, "std": np.sqrt(var)}
    cum = hist.cumsum(axis=1)
    for key, q in QUANTILES.items():
        # numpy's linear quantile: the order statistics at floor/ceil of q (n - 1), a value's rank read off `cum`.
        pos = q * (n - 1)
        lo, frac = int(np.floor(pos)), pos - np.floor(pos)
        at = [np.array([np.searchsorted(row, k, side="right") for row in cum], dtype=np.float64)
              for k in (lo, min(lo + 1, n - 1))]
        stats[key] = at[0] + frac * (at[1] - at[0])
    scaled = {k: (v / 255.0).reshape(channels, 1, 1) for k, v in stats.items()}
    return ({k: scaled[k] for k in ("min", "max", "mean", "std")} | {"count": np.array([len(frames)], dtype=np.int64)}
            | {k: scaled[k] for k in QUANTILES})


class Aggregate:
    """The dataset's statistics of one feature, merged episode by episode as lerobot's aggregate_feature_stats
    combines a list of them: min of mins, max of maxes, count-weighted mean, the pooled variance (each episode's
    variance plus its mean's squared offset, weighted by count; merged pairwise, which is the same sum without
    knowing the final mean first), and count-weighted means of the quantiles."""

    def __init__(self) -> None:
        self.count = 0
        self.sums: Stats = {}

    def add(self, stats: Stats) -> None:
        n = int(stats["count"][0])
        if not self.count:
            self.count, self.sums = n, {k: v * n for k, v in stats.items() if k in QUANTILES}
            self.sums |= {"min": stats["min"], "max": stats["max"], "mean": stats["mean"],
                          "m2": stats["std"] ** 2 * n}
            return
        total = self.count + n
        delta = stats["mean"] - self.sums["mean"]
        self.sums["mean"] = self.sums["mean"] + delta * (n / total)
        self.sums["m2"] = self.sums["m2"] + stats["std"] ** 2 * n + delta**2 * (self.count * n / total)
        self.sums["min"] = np.minimum(self.sums["min"], stats["min"])
        self.sums["max"] = np.maximum(self.sums["max"], stats["max"])
        for key in QUANTILES:
            self.sums[key] = self.sums[key] + stats[key] * n
        self.count = total

    def result(self) -> Stats:
        if not self.count:
            raise ValueError("no episodes: add() was never called")
        s = self.sums
        return {"min": s["min"], "max": s["max"], "mean": s["mean"], "std": np.sqrt(s["m2"] / self.count),
                "count": np.array([self.count], dtype=np.int64)} | {k: s[k] / self.count for k in QUANTILES}


def columns(feature: str, stats: Stats) -> dict[str, list]:
    """The episode row's `stats/<feature>/<stat>` entries, nested lists as lerobot's `.tolist()` leaves them."""
    return {f"stats/{feature}/{key}": value.tolist() for key, value in stats.items()}
