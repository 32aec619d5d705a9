"""One evaluation protocol for every policy and every environment (diffusion_policy's, made explicit).

Policy seeds × initial conditions: each policy seed (torch's global seed, which drives sampling) is run
on the same ``n_episodes`` initial conditions, which are environment reset seeds drawn from a range kept
apart from the one demonstrations are collected on (``train`` seeds start at 0, ``test`` at 100000).
The environment is anything with the gymnasium vector-env interface whose sub-envs take observation
histories and action chunks (``robopolicy.sim.make_vector_env``; a hardware backend can provide the same).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from robopolicy.episodes import EpisodeTally, Finished, step_vector_env
from robopolicy.eval.stats import summarize, wilson_interval
from robopolicy.specs import ChunkSpec

SEED_BASES = {"train": 0, "test": 100_000}


class ChunkPolicy(Protocol):
    """What evaluation needs from a policy; ``robopolicy.policy.Policy`` and :class:`ExpertPolicy` fit.

    ``predict_action`` takes ``{key: (B, n_obs_steps, *shape)}`` tensors and returns the unnormalized
    chunk ``(B, horizon, action_dim)`` whose index 0 is the action for the current step.
    """

    config: ChunkSpec

    def predict_action(self, obs: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def reset(self) -> None: ...


class VectorEnv(Protocol):
    num_envs: int

    def reset(self, *, seed: list[int]) -> tuple[dict[str, np.ndarray], dict[str, Any]]: ...

    def step(
        self, actions: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]: ...


@dataclass
class EvalConfig:
    """How many episodes on which seeds. ``n_videos`` rollouts (the first test seeds) are recorded."""

    n_episodes: int = 50
    policy_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    split: str = "test"
    n_envs: int = 10
    n_videos: int = 3

    def __post_init__(self) -> None:
        if self.split not in SEED_BASES:
            raise ValueError(f"split must be one of {sorted(SEED_BASES)}, got {self.split!r}")
        if self.n_episodes < 1 or self.n_envs < 1 or not self.policy_seeds:
            raise ValueError("n_episodes, n_envs and policy_seeds must be positive / non-empty")

    @property
    def env_seeds(self) -> list[int]:
        return [SEED_BASES[self.split] + i for i in range(self.n_episodes)]


@dataclass
class Episode:
    policy_seed: int
    env_seed: int
    success: bool
    ret: float
    length: int


def _policy_obs(obs: dict[str, np.ndarray], keys: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    """The policy's observation keys as tensors; every key when the policy names none."""
    return {k: torch.as_tensor(obs[k], device=device) for k in keys or obs}


def run_episodes(
    policy: ChunkPolicy, env: VectorEnv, env_seeds: list[int], policy_seed: int, latencies: list[float]
) -> list[Episode]:
    """Run one episode per seed in ``env_seeds``, ``env.num_envs`` at a time; append call latencies (s)."""
    torch.manual_seed(policy_seed)
    device = torch.device(getattr(policy, "device", "cpu"))
    n_act = policy.config.n_action_steps
    keys = [spec.key for spec in getattr(policy.config, "obs", [])]
    episodes: list[Episode] = []
    for start in range(0, len(env_seeds), env.num_envs):
        seeds = env_seeds[start:start + env.num_envs]
        # spare envs in the last round run the next seeds and are ignored
        padded = seeds + [env_seeds[-1] + 1 + i for i in range(env.num_envs - len(seeds))]
        obs, _ = env.reset(seed=padded)
        policy.reset()
        live = np.arange(env.num_envs) < len(seeds)
        tally = EpisodeTally(env.num_envs)
        ended: dict[int, Finished] = {}
        while live.any():
            t0 = time.perf_counter()
            with torch.no_grad():
                chunk = policy.predict_action(_policy_obs(obs, keys, device))
            latencies.append(time.perf_counter() - t0)
            step = step_vector_env(env, chunk[:, :n_act].detach().cpu().numpy())
            obs = step.obs
            ended.update((f.env, f) for f in tally.add(step.reward, step.n_steps, step.success, step.done, live))
            live &= ~step.done  # one episode per env: what follows (an autoreset) is not counted
        episodes += [Episode(policy_seed, s, ended[i].success, ended[i].ret, ended[i].length)
                     for i, s in enumerate(seeds)]
    return episodes


def evaluate(policy: ChunkPolicy, env: VectorEnv, config: EvalConfig, has_success: bool = True,
             shielded: bool = False) -> dict[str, Any]:
    """Run the protocol and return every number: per-episode records, success with a Wilson 95 % CI,
    per-policy-seed success, return and length summaries with bootstrap CIs, and inference latency.
    ``shielded``: the sub-envs are ``make_env(..., shield=...)``'s: each episode record gets its intervention
    counts, and ``shield`` their sum (the evaluated episodes' steps only, not those of spare or autoreset envs)."""
    latencies: list[float] = []
    episodes: list[Episode] = []
    shield_counts: list[dict[str, Any]] = []
    for seed in config.policy_seeds:
        episodes += run_episodes(policy, env, config.env_seeds, seed, latencies)
        if shielded:
            shield_counts += _episode_shield_counts(env, episodes[len(shield_counts):])
    successes = np.array([e.success for e in episodes])
    # the first call pays one-off costs (compilation, allocator and cache warm-up): reported apart
    first_ms, lat_ms = latencies[0] * 1e3, np.array(latencies[1:] or latencies) * 1e3
    result: dict[str, Any] = {
        "config": asdict(config),
        "n_episodes": len(episodes),
        "return": summarize(np.array([e.ret for e in episodes])),
        "length": summarize(np.array([e.length for e in episodes])),
        "latency_ms": {
            "per_call_mean": float(lat_ms.mean()), "per_call_p50": float(np.median(lat_ms)),
            "per_call_p95": float(np.quantile(lat_ms, 0.95)), "first_call": first_ms, "batch_size": env.num_envs,
            "n_calls": len(latencies),
        },
        "episodes": [asdict(e) for e in episodes],
    }
    if shielded:
        from robopolicy.hal.shield_env import sum_counts

        result["shield"] = sum_counts(shield_counts)
        for record, counts in zip(result["episodes"], shield_counts):
            record["shield"] = counts
    if has_success:
        low, high = wilson_interval(int(successes.sum()), len(successes))
        per_seed = {
            str(s): float(np.mean([e.success for e in episodes if e.policy_seed == s])) for s in config.policy_seeds
        }
        result["success"] = {"rate": float(successes.mean()), "ci95": [low, high], "per_policy_seed": per_seed}
    return result


def _episode_shield_counts(env: VectorEnv, episodes: list[Episode]) -> list[dict[str, Any]]:
    """The shield's counts of each of ``episodes`` (one policy seed's, each env seed run once), matched by seed."""
    from robopolicy.hal.shield_env import pop_shield_counts

    _, finished = pop_shield_counts(env)
    by_seed = {e.pop("env_seed"): e for e in finished if e["env_seed"] is not None}
    return [by_seed[e.env_seed] for e in episodes]
