"""Gaussian PPO on action chunks, the baseline: the same collector, advantages, critic and update as DPPO.

The policy is a regression head (an MLP predicting the chunk's mean) with a learned per-dimension std: a
one-step chain (K = K' = 1) of `FinetunedHead`, so the update is DPPO's with one unit per decision, summed
(not averaged or clamped) log-densities and the ordinary PPO clip range; comparisons with DPPO differ only in
the policy. Evaluation runs the mean. `scratch` builds a fresh policy for a task; its normalizer comes from the
task's action bounds and a few random-action episodes (there is no dataset to take statistics from).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from robopolicy.policy import Policy
from robopolicy.rl.dppo import DPPO, DPPOParams
from robopolicy.rl.scratch import scratch_policy
from robopolicy.specs import HeadConfig, from_dict


@dataclass
class GaussianParams(DPPOParams):
    steps: int = 1
    finetune_steps: int = 1
    min_std: float = 1e-3
    min_log_prob_std: float = 1e-3
    log_prob_clamp: list[float] | None = None
    log_prob_reduce: Literal["mean", "sum"] = "sum"
    clip_base: float = 0.2
    clip: float = 0.2
    gamma_denoising: float = 1.0
    learn_std: bool = True
    init_std: float = 0.5  # in normalized action units ([-1, 1] is the action box)
    hidden_dims: list[int] = field(default_factory=lambda: [256, 256])  # of a scratch policy's MLP
    stats_episodes: int = 4  # random-action episodes for a scratch policy's observation statistics


class GaussianPPO(DPPO):
    name = "ppo"
    Params = GaussianParams
    params: GaussianParams

    @classmethod
    def scratch_policy(cls, task, params: dict) -> Policy:
        p = from_dict(GaussianParams, params, "algo.params")
        return scratch_policy(task, HeadConfig("regression", {}), p.hidden_dims, p.stats_episodes, "mean_std",
                              task.horizons.n_action_steps)
