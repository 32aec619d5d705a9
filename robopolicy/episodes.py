"""Episodes, counted one way by every rollout loop: one vector-env call read whatever the autoreset mode, and the
running return, length and success of each env's episode.

Four loops drive environments: demonstration collection (`robopolicy.sim.collect`), the evaluation protocol
(`robopolicy.eval.protocol`), the RL fine-tuning collector (`robopolicy.rl.collector`) and the Gaussian PPO expert
trainer (`robopolicy.rl.ppo`). What is the same in all four lives here, in the core (numpy only: `sim` sits below
`eval` and `rl`, and evaluation on a hardware backend needs no simulator):

- an episode ends where the env says terminated or truncated; its return is the reward summed over the env steps
  that ran, its length the number of those steps, and it succeeded if any of them met the task's success rule
  (`EpisodeTally`, the one definition behind collection's keep/drop, evaluation's success rate and the RL logs);
- a vector-env call (`step_vector_env`) yields the steps each env executed (fewer than a chunk when its episode
  ended inside it, none on a next-step-autoreset reset call), whether any met the success rule, and the
  observation that followed them: the true final one where an episode ended, which is what a value target must
  bootstrap from, never the reset observation.

What differs in purpose stays with its loop, on purpose:

- collection resets a single env per episode with that episode's own seed and records every step's observation,
  action and simulator state, so each demonstration is reproducible on its own and kept or dropped by its success:
  no vector env and no autoreset (it tallies one env, stepping it one action at a time);
- evaluation runs one episode per env and seed and then ignores that env (`live`), so the default next-step
  autoreset is harmless there;
- the RL collector (chunk-level decisions) and the PPO trainer (single steps) run continuously under same-step
  autoreset, so every call is a transition that ran; their batches, value targets and reward scaling are their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np


@dataclass
class VectorStep:
    """One vector-env call, with the final observation/info of ended episodes split out."""

    obs: dict[str, np.ndarray]  # for the next decision (the reset observation where an episode ended)
    after: dict[str, np.ndarray]  # the observation that followed the call: the true final one where one ended
    reward: np.ndarray  # (N,) float32, summed over the executed steps
    n_steps: np.ndarray  # (N,) int64 steps executed
    terminated: np.ndarray  # (N,) bool
    truncated: np.ndarray  # (N,) bool
    success: np.ndarray  # (N,) bool: whether any executed step met the task's success rule

    @property
    def done(self) -> np.ndarray:
        return self.terminated | self.truncated


def _masked(info: dict[str, Any], key: str, n: int, default: Any) -> np.ndarray:
    values = np.asarray(info.get(key, np.full(n, default)))
    return np.where(np.asarray(info.get(f"_{key}", np.ones(n, bool))), values, default)


def _next_step_autoreset(env) -> bool:
    """gymnasium's default mode, read from the env's metadata (an `AutoresetMode`; its name or value)."""
    mode = getattr(env, "metadata", {}).get("autoreset_mode", "")
    return str(getattr(mode, "value", mode)).replace("_", "").lower() == "nextstep"


def step_vector_env(env, actions: np.ndarray, chunked: bool = True) -> VectorStep:
    """Step a gymnasium-style vector env with one chunk per env (``chunked``: `MultiStepWrapper` sub-envs, which
    report the steps they executed in ``info["n_steps"]``) or one action per env (single-step sub-envs).

    With same-step autoreset the final observation/info of an ended episode come from ``final_obs`` /
    ``final_info``; with next-step autoreset the returned ones are already final, and the next call on that env is a
    reset whose action is ignored: a chunked sub-env reports no steps for it (callers stop using the env, as
    evaluation does), a single-step one could not tell, so single-step sub-envs need same-step autoreset.
    """
    if not chunked and _next_step_autoreset(env):
        raise ValueError("a vector env of single-step sub-envs needs same-step autoreset (make_vector_env(..., "
                         "same_step_autoreset=True)): a next-step reset call would count as a step")
    obs, reward, terminated, truncated, info = env.step(actions)
    n = len(reward)
    done = terminated | truncated
    n_steps = _masked(info, "n_steps", n, 0) if chunked else np.ones(n, np.int64)
    success = _masked(info, "is_success", n, False).astype(bool)
    after = {k: v.copy() for k, v in obs.items()}
    if done.any() and "final_info" in info:  # same-step autoreset; with next-step autoreset info is final
        final_info = info["final_info"]
        if chunked:
            n_steps = np.where(done, _masked(final_info, "n_steps", n, 0), n_steps)
        success = np.where(done, _masked(final_info, "is_success", n, False).astype(bool), success)
        for i in np.flatnonzero(done):
            for k, v in info["final_obs"][i].items():
                after[k][i] = v
    return VectorStep(obs, after, np.asarray(reward, np.float32), n_steps.astype(np.int64), terminated, truncated,
                      success)


class Finished(NamedTuple):
    """An episode that ended: which env ran it and its return, length (env steps) and success."""

    env: int
    ret: float
    length: int
    success: bool


class EpisodeTally:
    """The running return, length and success of the current episode of each of ``n`` envs."""

    def __init__(self, n: int) -> None:
        self.ret = np.zeros(n)
        self.length = np.zeros(n, np.int64)
        self.success = np.zeros(n, bool)

    def add(self, reward: Any, n_steps: Any, success: Any, done: Any, live: np.ndarray | None = None) -> list[Finished]:
        """Count one call's (N,) rewards, executed steps and success; return the episodes that ``done`` ends, in env
        order, and restart their counts. Envs outside ``live`` (when given) are not counted at all."""
        live = np.ones(len(self.ret), bool) if live is None else live
        self.ret[live] += np.asarray(reward)[live]
        self.length[live] += np.asarray(n_steps)[live]
        self.success[live] |= np.asarray(success, bool)[live]
        finished = [Finished(int(i), float(self.ret[i]), int(self.length[i]), bool(self.success[i]))
                    for i in np.flatnonzero(np.asarray(done, bool) & live)]
        for f in finished:
            self.ret[f.env], self.length[f.env], self.success[f.env] = 0.0, 0, False
        return finished
