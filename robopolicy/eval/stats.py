"""Confidence intervals for evaluation numbers.

Success is a binomial proportion: the Wilson score interval stays inside [0, 1] and is honest at 0 % and
100 %, unlike the normal approximation. Returns and lengths get a percentile bootstrap of the mean.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``successes`` out of ``n`` (95 % by default); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_mean_ci(
    values: np.ndarray, n_resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; a fixed ``seed`` keeps reports reproducible."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (n_resamples, values.size))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def summarize(values: np.ndarray) -> dict[str, float]:
    """Mean, std, min, max and a bootstrap 95 % interval of the mean."""
    values = np.asarray(values, dtype=np.float64)
    low, high = bootstrap_mean_ci(values)
    return {
        "mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
        "max": float(values.max()), "ci95": [low, high],
    }
