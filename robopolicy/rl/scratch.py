"""The policies `robopolicy finetune scratch` starts from: a fresh low-dim policy for a task (an MLP backbone under
any head), normalized by the task's action bounds and a few random-action episodes, since there is no dataset to
take statistics from. Gaussian PPO (`rl/gaussian.py`) and FPO (`rl/fpo.py`) build theirs here.
"""

from __future__ import annotations

import numpy as np

from robopolicy.policy import Policy
from robopolicy.specs import BackboneConfig, ConfigError, HeadConfig, PolicyConfig


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


def scratch_policy(task, head: HeadConfig, hidden_dims: list[int], stats_episodes: int, normalization: str,
                   horizon: int) -> Policy:
    """A freshly initialized low-dim policy for `task` (an MLP backbone under `head`), its normalizer fitted to the
    action bounds and `stats_episodes` random-action episodes: what `robopolicy finetune scratch` starts from."""
    if any(o.kind == "rgb" for o in task.obs):
        raise ConfigError(f"task {task.name}: a scratch policy takes low-dim observations only")
    if task.action.low is None or task.action.high is None:
        raise ConfigError(f"task {task.name}: action.low/high are needed to normalize a scratch policy")
    h = task.horizons
    config = PolicyConfig(obs=task.obs, action=task.action, n_obs_steps=h.n_obs_steps, horizon=horizon,
                          n_action_steps=h.n_action_steps, normalization=normalization,
                          backbone=BackboneConfig(kind="mlp", hidden_dims=list(hidden_dims)), head=head)
    policy = Policy(config)
    low, high = np.asarray(task.action.low, np.float64), np.asarray(task.action.high, np.float64)
    stats = _observation_stats(task, stats_episodes)
    stats["action"] = {"min": low, "max": high, "mean": (low + high) / 2, "std": (high - low) / 2}
    policy.fit_normalizer(stats)
    return policy
