"""One call of a vector env of chunked sub-envs (`MultiStepWrapper`), read the same way by every loop (numpy only,
so evaluation on hardware backends needs no simulator).

The RL collector and the evaluation protocol both step chunks through `step_chunks`: the reward summed over the
executed steps, how many steps ran, success, and the observation that followed the chunk (the true final one
where an episode ended, whichever autoreset mode the vector env uses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class ChunkStep:
    """One vector-env call with a chunk per env, with the final observation/info of ended episodes split out."""

    obs: dict[str, np.ndarray]  # for the next decision (the reset observation where an episode ended)
    after: dict[str, np.ndarray]  # the observation that followed the chunk: the true final one where one ended
    reward: np.ndarray  # (N,) summed over the executed steps
    n_steps: np.ndarray  # (N,) steps executed (fewer than the chunk when the episode ended inside it)
    terminated: np.ndarray
    truncated: np.ndarray
    success: np.ndarray  # (N,) whether any executed step met the task's success rule


def _masked(info: dict[str, Any], key: str, n: int, default: Any) -> np.ndarray:
    values = np.asarray(info.get(key, np.full(n, default)))
    return np.where(np.asarray(info.get(f"_{key}", np.ones(n, bool))), values, default)


def step_chunks(env, actions: np.ndarray) -> ChunkStep:
    """Step a vector env of chunked sub-envs with (N, n_action_steps, D) actions.

    With same-step autoreset the final observation/info of an ended episode come from `final_obs` /
    `final_info`; with gymnasium's default next-step autoreset the returned ones are already final (and the
    next call on that env is a reset whose action is ignored: callers must stop using it, as evaluation does).
    """
    obs, reward, terminated, truncated, info = env.step(actions)
    n = len(reward)
    done = terminated | truncated
    n_steps = _masked(info, "n_steps", n, 0)
    success = _masked(info, "is_success", n, False).astype(bool)
    after = {k: v.copy() for k, v in obs.items()}
    if done.any() and "final_info" in info:  # same-step autoreset; with next-step autoreset info is final
        final_info = info["final_info"]
        n_steps = np.where(done, _masked(final_info, "n_steps", n, 0), n_steps)
        success = np.where(done, _masked(final_info, "is_success", n, False).astype(bool), success)
        for i in np.flatnonzero(done):
            for k, v in info["final_obs"][i].items():
                after[k][i] = v
    return ChunkStep(obs, after, np.asarray(reward, np.float32), n_steps.astype(np.int64), terminated, truncated,
                     success)
