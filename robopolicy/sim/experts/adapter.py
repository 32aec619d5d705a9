"""Scripted experts behind the chunk-policy interface, so evaluation runs them like learned policies."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from robopolicy.sim.experts import Expert
from robopolicy.specs import ChunkSpec


class ExpertPolicy:
    """One expert per sub-environment, built on first use. ``reset`` re-seeds them from torch's global
    generator, so the evaluation protocol's policy seeds also fix the experts' noise.

    One observation, one action per call: experts are closed-loop at every control step. The config names
    no observation keys, so the protocol passes every key.
    """

    def __init__(self, make_expert: Callable[[], Expert]) -> None:
        self.make_expert = make_expert
        self.config = ChunkSpec(n_obs_steps=1, horizon=1, n_action_steps=1)
        self.experts: list[Expert] = []
        self._pending_reset = True

    def reset(self) -> None:
        self._pending_reset = True

    def predict_action(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = next(iter(obs.values())).shape[0]
        while len(self.experts) < batch:
            self.experts.append(self.make_expert())
        if self._pending_reset:
            for expert in self.experts:
                expert.reset(seed=int(torch.randint(0, 2**31 - 1, ()).item()))
            self._pending_reset = False
        latest = {k: v[:, -1].cpu().numpy() for k, v in obs.items()}
        actions = [expert.act({k: v[i] for k, v in latest.items()}) for i, expert in enumerate(self.experts[:batch])]
        return torch.as_tensor(np.stack(actions), dtype=torch.float32)[:, None]
