"""Per-episode LeRobot statistics (robopolicy.data.convert.lerobot_stats): numpy's over the episode's frames,
and the dataset's as lerobot's aggregate_stats folds them (its formula written out here over a list)."""
from __future__ import annotations

import numpy as np
import pytest

from robopolicy.data.convert import lerobot_stats
from robopolicy.data.convert.lerobot_stats import QUANTILES, Aggregate, episode_stats


def _numpy(x: np.ndarray, visual: bool) -> dict[str, np.ndarray]:
    """The statistics by plain numpy: per channel over every pixel in [0, 1], or per flattened dimension."""
    n = len(x)
    flat = x.reshape(-1, x.shape[-1]) / 255.0 if visual else x.reshape(n, -1).astype(np.float64)
    out = {"min": flat.min(0), "max": flat.max(0), "mean": flat.mean(0), "std": flat.std(0)}
    out |= {k: np.quantile(flat, q, axis=0) for k, q in QUANTILES.items()}
    return {k: v.reshape(-1, 1, 1) if visual else v for k, v in out.items()} | {"count": np.array([n])}


def _lerobot_aggregate(stats: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """lerobot 0.4's aggregate_feature_stats, as a list: pooled variance about the final mean."""
    counts = np.array([s["count"][0] for s in stats], dtype=np.float64)
    shape = (-1,) + (1,) * stats[0]["mean"].ndim
    w = counts.reshape(shape)
    mean = (np.stack([s["mean"] for s in stats]) * w).sum(0) / counts.sum()
    var = ((np.stack([s["std"] ** 2 + (s["mean"] - mean) ** 2 for s in stats])) * w).sum(0) / counts.sum()
    out = {"min": np.min([s["min"] for s in stats], 0), "max": np.max([s["max"] for s in stats], 0),
           "mean": mean, "std": np.sqrt(var), "count": np.array([int(counts.sum())])}
    return out | {k: (np.stack([s[k] for s in stats]) * w).sum(0) / counts.sum() for k in QUANTILES}


@pytest.mark.parametrize("length", [1, 2, 37])
def test_image_stats_are_numpys_per_channel_in_unit_range(length, monkeypatch):
    monkeypatch.setattr(lerobot_stats, "_SLICE_VALUES", 100)  # several bincount slices per episode
    rng = np.random.default_rng(length)
    frames = rng.integers(0, 256, (length, 6, 5, 3), dtype=np.uint8)
    frames[..., 1] = 7  # a constant channel: min = max = every quantile
    frames[..., 2] = np.minimum(frames[..., 2], 40)  # a skewed one
    got, want = episode_stats(frames, visual=True), _numpy(frames, visual=True)
    assert list(got) == ["min", "max", "mean", "std", "count", *QUANTILES]  # lerobot's column order
    for key in want:
        assert got[key].shape == want[key].shape, key
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=1e-15, err_msg=key)
    assert got["count"].tolist() == [length]  # frames, as lerobot counts image samples


@pytest.mark.parametrize("shape, dtype", [((), np.float32), ((3,), np.float64), ((2, 2), np.float32), ((4,), np.int64)])
def test_low_dim_stats_are_numpys_and_keep_integer_min_max(shape, dtype):
    x = (np.random.default_rng(1).standard_normal((9, *shape)) * 50).astype(dtype)
    got, want = episode_stats(x, visual=False), _numpy(x, visual=False)
    dims = int(np.prod(shape))
    for key in want:
        assert got[key].shape == ((1,) if key == "count" else (dims,)), key
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, err_msg=key)
    assert got["min"].dtype == dtype and got["max"].dtype == dtype  # lerobot writes int64 min/max for integers
    assert got["mean"].dtype == np.float64 and got["q50"].dtype == np.float64


@pytest.mark.parametrize("visual", [False, True])
def test_aggregate_is_lerobots_and_its_moments_are_those_of_all_frames(visual):
    rng = np.random.default_rng(2)
    step = (4, 3, 3) if visual else (5,)
    episodes = [rng.integers(0, 256, (n, *step), dtype=np.uint8) if visual
                else (rng.standard_normal((n, *step)) * 3 + 100).astype(np.float32) for n in (1, 8, 3, 20, 2)]
    stats = [episode_stats(x, visual) for x in episodes]
    agg = Aggregate()
    for s in stats:
        agg.add(s)
    got, want = agg.result(), _lerobot_aggregate(stats)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, err_msg=key)
    whole = _numpy(np.concatenate(episodes), visual)
    for key in ("min", "max", "mean", "std", "count"):
        np.testing.assert_allclose(got[key], whole[key], rtol=1e-12, err_msg=key)
