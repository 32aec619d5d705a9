"""A built-in bimodal toy task: the smallest problem on which a unimodal regressor visibly fails.

Every action chunk is +1 or -1 everywhere (plus a little noise) with equal probability, independent of
the observation. A policy that averages the modes predicts ~0; a generative head should produce both.
Items have the same layout as `robopolicy.data.sampler.SequenceDataset`, so the trainer treats both alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from robopolicy.data.running_stats import key_stats
from robopolicy.specs import ActionSpec, BackboneConfig, HeadConfig, ObsSpec, PolicyConfig

STATE_KEY = "state"
STATE_DIM = 2
NOISE_STD = 0.05
MODE_THRESHOLD = 0.5


class BimodalToyDataset(Dataset):
    """`size` samples of {"obs": {"state": (n_obs_steps, 2)}, "action": (horizon, action_dim)}, fixed by `seed`."""

    def __init__(self, size: int = 4096, horizon: int = 4, action_dim: int = 2, n_obs_steps: int = 1,
                 seed: int = 0) -> None:
        if min(size, horizon, action_dim, n_obs_steps) < 1:
            raise ValueError(f"size, horizon, action_dim and n_obs_steps must be >= 1, "
                             f"got {size}, {horizon}, {action_dim}, {n_obs_steps}")
        rng = np.random.default_rng(seed)
        self.state = rng.uniform(-1.0, 1.0, (size, n_obs_steps, STATE_DIM)).astype(np.float32)
        signs = rng.choice([-1.0, 1.0], size=(size, 1, 1))
        noise = rng.normal(0.0, NOISE_STD, (size, horizon, action_dim))
        self.action = (signs + noise).astype(np.float32)

    def __len__(self) -> int:
        return len(self.action)

    def __getitem__(self, i: int | list[int]) -> dict[str, Any]:
        """One sample, or for a list of indices the batch (what `robopolicy.data.loader.make_loader` fetches)."""
        return {"obs": {STATE_KEY: torch.from_numpy(self.state[i])}, "action": torch.from_numpy(self.action[i])}

    def obs_spec(self) -> dict[str, dict[str, Any]]:
        return {STATE_KEY: {"shape": [STATE_DIM], "kind": "low_dim"}}

    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        """Per-dimension min/max/mean/std of "state" and "action" (what `Policy.fit_normalizer` expects)."""
        return {key: key_stats(values.reshape(-1, values.shape[-1]))
                for key, values in ((STATE_KEY, self.state), ("action", self.action))}


def mode_coverage(actions: torch.Tensor) -> dict[str, float]:
    """Fractions of chunks (N, H, D) in the + mode (mean > 0.5), the - mode (mean < -0.5), or between them."""
    means = actions.detach().float().flatten(1).mean(1)
    n = max(len(means), 1)
    plus = int((means > MODE_THRESHOLD).sum())
    minus = int((means < -MODE_THRESHOLD).sum())
    return {"plus": plus / n, "minus": minus / n, "between": (len(means) - plus - minus) / n}


# head -> (training steps at batch 256, head params): short runs that keep every generative head's samples
# in the two modes (tests/test_bimodal_acceptance.py asserts it); used by `robopolicy demo` too.
TOY_RECIPES: dict[str, tuple[int, dict[str, Any]]] = {
    "diffusion": (1500, {"sampler": "ddpm", "inference_steps": 100}),
    "flow": (1500, {}),
    "consistency": (1000, {}),
    "energy": (200, {"num_counter_examples": 16}),
    "energy_diffusion": (1500, {"sampler": "ddpm", "inference_steps": 100}),
    "regression": (300, {}),
}


def toy_policy_config(head: str, horizon: int = 4, action_dim: int = 2, n_obs_steps: int = 1,
                      hidden_dims: list[int] | None = None, head_params: dict[str, Any] | None = None) -> PolicyConfig:
    """A small MLP-backbone policy for the toy task; it learns both modes in a few hundred steps on a CPU."""
    return PolicyConfig(
        obs=[ObsSpec(STATE_KEY, (STATE_DIM,))],
        action=ActionSpec(action_dim),
        n_obs_steps=n_obs_steps,
        horizon=horizon,
        n_action_steps=horizon,
        backbone=BackboneConfig(kind="mlp", hidden_dims=list(hidden_dims or [256, 256, 256])),
        head=HeadConfig(name=head, params=dict(head_params or {})),
    )
