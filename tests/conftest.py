"""Shared test fixtures: tiny policies and observations."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
torch.set_num_threads(1)  # tiny test models run fastest single-threaded


def tiny_stats(low_dim: dict[str, int], action_dim: int) -> dict[str, dict[str, np.ndarray]]:
    """Statistics with distinct per-dimension ranges, so normalization bugs show up."""
    out = {}
    for key, dim in {**low_dim, "action": action_dim}.items():
        lo = -np.arange(1, dim + 1, dtype=np.float32)
        hi = 2 * np.arange(1, dim + 1, dtype=np.float32)
        out[key] = {"min": lo, "max": hi, "mean": (lo + hi) / 2, "std": (hi - lo) / 4}
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
