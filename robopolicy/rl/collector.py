"""The rollout collector: vector envs driven chunk by chunk, one row per decision.

Environments must be gymnasium vector envs over `MultiStepWrapper` sub-envs built with same-step autoreset
(`make_vector_env(..., autoreset_mode=SAME_STEP)`): an episode that ends inside a chunk is reset in the same
call, its true final observation and info arrive in `info["final_obs"]` / `info["final_info"]`, and every
row of the batch is a chunk that really ran. (Gymnasium's default next-step autoreset would spend the next
call on the reset, ignore its action and return reward 0; such a transition must never reach PPO.)

Per decision the batch holds the conditioning vector of the observation window (the policy's frozen encoder
features), what the algorithm stores for its ratio, the reward summed over the executed steps, the number of
executed steps, terminated/truncated flags, and the conditioning vector of the observation that followed the
chunk (the true final one where the episode ended), so GAE can bootstrap truncations correctly. Each call is read
and each finished episode counted (return, length, success: any executed step succeeded) by `robopolicy.episodes`,
as in evaluation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from robopolicy.episodes import EpisodeTally, step_vector_env
from robopolicy.rl.algorithm import Algorithm


@dataclass
class Rollout:
    """(T, N) decision-major tensors of one iteration (T decisions per env, N envs)."""

    cond: torch.Tensor  # (T, N, C)
    next_cond: torch.Tensor  # (T, N, C) of the observation after the chunk (true final one at episode ends)
    store: dict[str, torch.Tensor]  # the algorithm's per-decision tensors, (T, N, ...)
    reward: torch.Tensor  # (T, N) summed over executed steps
    n_steps: torch.Tensor  # (T, N) long
    terminated: torch.Tensor  # (T, N) bool
    truncated: torch.Tensor  # (T, N) bool; the last row of an unfinished episode is not marked (GAE bootstraps it)
    episodes: list[dict[str, float]] = field(default_factory=list)  # finished episodes: return, length, success
    env_time_s: float = 0.0
    policy_time_s: float = 0.0

    @property
    def env_steps(self) -> int:
        return int(self.n_steps.sum())


class Collector:
    """Runs `algorithm` in `env` for a fixed number of decisions per env, starting from a seeded reset."""

    def __init__(self, env, policy, algorithm: Algorithm) -> None:
        self.env, self.policy, self.algorithm = env, policy, algorithm
        self.n_action_steps = policy.config.n_action_steps
        self.keys = [spec.key for spec in policy.config.obs]

    def _encode(self, obs: dict[str, np.ndarray]) -> torch.Tensor:
        with torch.no_grad():
            return self.policy.encode({k: torch.as_tensor(obs[k]) for k in self.keys})

    def collect(self, n_decisions: int, seeds: list[int]) -> Rollout:
        n = self.env.num_envs
        obs, _ = self.env.reset(seed=seeds)
        conds, next_conds, stores = [], [], []
        rewards, n_steps, terms, truncs = [], [], [], []
        episodes: list[dict[str, float]] = []
        tally = EpisodeTally(n)
        env_time = policy_time = 0.0
        cond = self._encode(obs)
        for _ in range(n_decisions):
            t0 = time.perf_counter()
            decision = self.algorithm.act(cond)
            actions = decision.actions[:, : self.n_action_steps].cpu().numpy()
            t1 = time.perf_counter()
            step = step_vector_env(self.env, actions)
            t2 = time.perf_counter()
            done = step.done
            next_cond = self._encode(step.obs)
            after = self._encode(step.after) if done.any() else next_cond
            policy_time += t1 - t0 + time.perf_counter() - t2
            env_time += t2 - t1
            conds.append(cond)
            next_conds.append(after)
            stores.append(decision.store)
            rewards.append(step.reward)
            n_steps.append(step.n_steps)
            terms.append(step.terminated)
            truncs.append(step.truncated)
            episodes += [{"return": f.ret, "length": f.length, "success": float(f.success)}
                         for f in tally.add(step.reward, step.n_steps, step.success, done)]
            cond = next_cond
        return Rollout(
            cond=torch.stack(conds), next_cond=torch.stack(next_conds),
            store={k: torch.stack([s[k] for s in stores]) for k in stores[0]},
            reward=torch.as_tensor(np.stack(rewards)), n_steps=torch.as_tensor(np.stack(n_steps)),
            terminated=torch.as_tensor(np.stack(terms)), truncated=torch.as_tensor(np.stack(truncs)),
            episodes=episodes, env_time_s=env_time, policy_time_s=policy_time,
        )
