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

import numpy as np

from robopolicy.policy import Policy
from robopolicy.rl.dppo import DPPO, DPPOParams
from robopolicy.specs import BackboneConfig, ConfigError, HeadConfig, PolicyConfig, from_dict


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


def _observation_stats(task, episodes: int) -> dict[str, dict[str, np.ndarray]]:
    from robopolicy.sim import make_base_env

    env = make_base_env(task)
    frames: dict[str, list[np.ndarray]] = {o.key: [] for o in task.obs}
    for episode in range(episodes):
        obs, _ = env.reset(seed=episode)
        env.action_space.seed(episode)
        done = False
        while not done:
            for key in frames:
                frames[key].append(obs[key])
            obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
            done = terminated or truncated
    env.close()
    stats = {}
    for key, values in frames.items():
        x = np.stack(values).astype(np.float64)
        stats[key] = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}
    return stats


class GaussianPPO(DPPO):
    name = "ppo"
    Params = GaussianParams
    params: GaussianParams

    @classmethod
    def scratch_policy(cls, task, params: dict) -> Policy:
        p = from_dict(GaussianParams, params, "algo.params")
        if any(o.kind == "rgb" for o in task.obs):
            raise ConfigError(f"task {task.name}: a scratch Gaussian policy takes low-dim observations only")
        if task.action.low is None or task.action.high is None:
            raise ConfigError(f"task {task.name}: action.low/high are needed to normalize a scratch policy")
        h = task.horizons
        config = PolicyConfig(obs=task.obs, action=task.action, n_obs_steps=h.n_obs_steps, horizon=h.n_action_steps,
                              n_action_steps=h.n_action_steps, normalization="mean_std",
                              backbone=BackboneConfig(kind="mlp", hidden_dims=list(p.hidden_dims)),
                              head=HeadConfig("regression", {}))
        policy = Policy(config)
        low, high = np.asarray(task.action.low, np.float64), np.asarray(task.action.high, np.float64)
        stats = _observation_stats(task, p.stats_episodes)
        stats["action"] = {"min": low, "max": high, "mean": (low + high) / 2, "std": (high - low) / 2}
        policy.fit_normalizer(stats)
        return policy
