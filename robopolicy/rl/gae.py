"""Advantages over chunk-level decisions: GAE(lambda) with a discount per executed env step, reward scaling.

A decision that executed n environment steps (n < n_action_steps when the episode ended inside the chunk) is
discounted by gamma^n. `next_values` must be the value of the observation that followed the chunk: for an
episode that ended, its true final observation (the vector env's `final_obs`), never the reset one. A
termination stops bootstrapping; a truncation (time limit, or the end of the iteration's rollout) bootstraps
from `next_values` but stops the GAE recursion, since the next row belongs to another episode.
"""

from __future__ import annotations

import torch
from torch import nn

from robopolicy.nn.normalizer import RunningNorm


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, n_steps: torch.Tensor,
                terminated: torch.Tensor, truncated: torch.Tensor, gamma: float,
                gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) of (T, N) decision-major rollouts; the last row bootstraps from `next_values`."""
    discount = gamma ** n_steps.to(values.dtype)
    alive = (~terminated).to(values.dtype)
    continues = (~(terminated | truncated)).to(values.dtype)
    deltas = rewards + discount * next_values * alive - values
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[0])
    for t in reversed(range(values.shape[0])):
        running = deltas[t] + discount[t] * gae_lambda * continues[t] * running
        advantages[t] = running
    return advantages, advantages + values


class RewardScaler(nn.Module):
    """Divides rewards by a running std of each env's discounted return (CleanRL's / DPPO's reward scaling).

    Its statistics are buffers, saved in fine-tuning checkpoints, so a resumed run scales exactly as before.
    The per-env running returns restart with each episode (and each iteration, which resets the envs).
    """

    def __init__(self) -> None:
        super().__init__()
        self.returns = RunningNorm(1)

    def scale(self, rewards: torch.Tensor, n_steps: torch.Tensor, done: torch.Tensor, gamma: float) -> torch.Tensor:
        """Scaled (T, N) rewards; the statistics are updated row by row with the discounted returns."""
        ret = torch.zeros(rewards.shape[1], dtype=torch.float64)
        for t in range(rewards.shape[0]):
            ret = ret * gamma ** n_steps[t].double() + rewards[t].double()
            self.returns.update(ret[:, None])
            ret = torch.where(done[t], torch.zeros_like(ret), ret)
        return (rewards / torch.sqrt(self.returns.var + 1e-8)).to(rewards.dtype)
