"""Regression head: one deterministic forward, MSE loss. The baseline that averages modes away.

It exists to show what the generative heads buy (on a bimodal task it predicts the mean of the modes),
and as a Gaussian policy (mean = prediction, std = min_std) it also plugs into the RL chain interface.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robopolicy.heads.base import Head, check_params


@dataclass
class RegressionParams:
    min_std: float = 0.1

    def __post_init__(self) -> None:
        check_params(self, [("min_std", self.min_std > 0, "> 0")])


class RegressionHead(Head):
    name = "regression"
    Params = RegressionParams
    params: RegressionParams

    def predict(self, cond: torch.Tensor) -> torch.Tensor:
        zeros = cond.new_zeros(cond.shape[0], *self.chunk_shape)
        return self.net(zeros, 0.0, cond)

    def loss(self, cond: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.predict(cond), actions)

    def noise_shape(self, batch: int, steps: int) -> tuple[int, ...]:
        return (batch, 0, *self.chunk_shape)  # deterministic

    def sample_from_noise(self, cond: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
        return self.predict(cond)

    def initial_latent(self, batch: int, cond: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return cond.new_zeros(batch, *self.chunk_shape)

    def transition(self, cond: torch.Tensor, x: torch.Tensor, k: torch.Tensor | int,
                   steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.predict(cond)
        return mean, torch.full_like(mean, self.params.min_std)
