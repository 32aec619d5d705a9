"""Per-key affine normalizer stored as buffers, so it travels inside the checkpoint.

The same module maps data into network space during training, evaluation and deployment; there is no
second copy of the statistics that could drift (a classic silent bug in BC code bases).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

_EPS = 1e-4


def _safe_name(key: str) -> str:
    # Module names may not contain "."; observation keys (e.g. "robot0_eef_pos") usually do not, but "/" or "." can.
    return key.replace(".", "__dot__").replace("/", "__slash__")


class _Affine(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(dim))
        self.register_buffer("offset", torch.zeros(dim))


class Normalizer(nn.Module):
    """y = x * scale + offset per key; min_max maps [min, max] to [-1, 1], mean_std to zero mean, unit std.

    Dimensions that are constant in the data (range or std below 1e-4) get scale 1 and are centred,
    so they never divide by zero and stay finite at deployment.
    """

    def __init__(self, dims: Mapping[str, int]) -> None:
        super().__init__()
        self.keys = list(dims)
        self.params = nn.ModuleDict({_safe_name(k): _Affine(d) for k, d in dims.items()})
        # direct key -> module look-up: normalize/unnormalize run on every inference call
        self._by_key = {k: self.params[_safe_name(k)] for k in self.keys}

    def fit(self, stats: Mapping[str, Mapping[str, np.ndarray]], mode: str) -> None:
        """Set scale/offset from dataset statistics (`min`, `max`, `mean`, `std` per key)."""
        for key in self.keys:
            if key not in stats:
                raise KeyError(f"normalizer: no statistics for key {key!r} (have {sorted(stats)})")
            s = {k: torch.as_tensor(np.asarray(v), dtype=torch.float32).reshape(-1) for k, v in stats[key].items()}
            if mode == "min_max":
                lo, hi = s["min"], s["max"]
                span = hi - lo
                ok = span > _EPS
                scale = torch.where(ok, 2.0 / torch.where(ok, span, torch.ones_like(span)), torch.ones_like(span))
                offset = torch.where(ok, -1.0 - lo * scale, -(lo + hi) / 2)
            elif mode == "mean_std":
                std = s["std"]
                ok = std > _EPS
                scale = torch.where(ok, 1.0 / torch.where(ok, std, torch.ones_like(std)), torch.ones_like(std))
                offset = -s["mean"] * scale
            else:
                raise ValueError(f"normalizer: mode must be 'min_max' or 'mean_std', got {mode!r}")
            p = self._by_key[key]
            if scale.shape != p.scale.shape:
                raise ValueError(f"normalizer: statistics for {key!r} have shape {tuple(scale.shape)}, "
                                 f"expected {tuple(p.scale.shape)}")
            p.scale.copy_(scale)
            p.offset.copy_(offset)

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        p = self._by_key[key]
        return torch.addcmul(p.offset, x, p.scale)

    def unnormalize(self, key: str, y: torch.Tensor) -> torch.Tensor:
        p = self._by_key[key]
        return (y - p.offset).div_(p.scale)


class RunningNorm(nn.Module):
    """Running mean/variance (parallel Welford update) kept as float64 buffers, so it is saved with its owner.

    For statistics that are only known while acting (RL): the PPO experts' observation normalization and the
    fine-tuning reward scaler. `forward` normalizes and clips to [-10, 10].
    """

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    def update(self, x: torch.Tensor) -> None:
        x = x.double().reshape(-1, self.mean.shape[0])
        mean, var, n = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta, total = mean - self.mean, self.count + n
        self.var.copy_((self.var * self.count + var * n + delta**2 * self.count * n / total) / total)
        self.mean.add_(delta * n / total)
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / torch.sqrt(self.var + 1e-8)).clamp(-10, 10).float()
