"""The value network: an MLP on the policy's conditioning vector.

For low-dim tasks that vector is the normalized state history; for pixel tasks it is the (frozen) visuomotor
encoder's features, so the critic shares the encoder the policy was trained with and adds no second one.
"""

from __future__ import annotations

import torch
from torch import nn

from robopolicy.nn.encoder import mlp


class Critic(nn.Module):
    def __init__(self, cond_dim: int, hidden_dims: list[int]) -> None:
        super().__init__()
        self.net = mlp([cond_dim, *hidden_dims, 1], nn.Mish)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.net(cond).squeeze(-1)
