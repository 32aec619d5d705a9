"""A gymnasium vector env whose environments live in Ray actors, so rollouts can use more cores than one machine has.

The policy stays on the learner and acts on the whole batch; only observations and actions cross the wire. Each
actor hosts a group of environments as an ordinary local vector env built by the ``make_group`` function it is
given (:func:`robopolicy.sim.make_vector_env`, passed in by the factory so this module does not import it back)
from the same task file, so wrappers, seeding and autoreset semantics are those of the local backend by
construction; this class only splits actions across the groups and joins what comes back in env order. Infos are
rebuilt env by env with gymnasium's own ``VectorEnv._add_info``, so they match a local vector env key for key.

Ray runs locally unless ``address`` names a cluster (``"auto"`` joins the one started by ``ray start --head`` on
this node); see docs/distributed.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import ray
from gymnasium.vector.utils import batch_space

from robopolicy.task import TaskSpec, load_task


class _EnvGroup:
    """Runs inside a Ray actor: a local vector env of ``n_envs`` copies of the task."""

    def __init__(self, make_group: Callable[..., gym.vector.VectorEnv], task: TaskSpec, n_envs: int,
                 kwargs: dict[str, Any]) -> None:
        self.env = make_group(task, n_envs, **kwargs)  # unpickled by reference: the actor imports the factory

    def spaces(self) -> tuple[gym.Space, gym.Space, dict[str, Any]]:
        return self.env.single_observation_space, self.env.single_action_space, dict(self.env.metadata)

    def reset(self, seed: list[int | None], options: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: np.ndarray) -> tuple:
        return self.env.step(actions)

    def call(self, name: str, args: tuple, kwargs: dict[str, Any]) -> tuple:
        return self.env.call(name, *args, **kwargs)

    def close(self) -> None:
        self.env.close()


def _unbatch_info(info: dict[str, Any], j: int) -> dict[str, Any]:
    """The info of env ``j`` of a vector env's info dict (``key`` arrays with their ``_key`` masks)."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if key.startswith("_") or not info[f"_{key}"][j]:
            continue
        out[key] = _unbatch_info(value, j) if isinstance(value, dict) else value[j]
    return out


def _concat(parts: list[Any]) -> Any:
    """Join batched observations of consecutive env groups along the env axis (dict, tuple or array spaces)."""
    first = parts[0]
    if isinstance(first, dict):
        return {key: _concat([p[key] for p in parts]) for key in first}
    if isinstance(first, tuple):
        return tuple(_concat([p[i] for p in parts]) for i in range(len(first)))
    return np.concatenate(parts, axis=0)


class RayVectorEnv(gym.vector.VectorEnv):
    """``n_envs`` environments of ``task`` spread over ``num_workers`` Ray actors (one CPU each by default).

    ``num_workers`` defaults to one per CPU Ray reports, at most one per environment. ``env_kwargs`` go to
    :func:`robopolicy.sim.make_vector_env` in each actor (horizons, ``asynchronous``, env options), so an actor can
    itself run its group in subprocesses. Actions must be one array with the envs on axis 0. ``make_group`` builds
    each actor's local vector env (``make_group(task, n, **env_kwargs)``).
    """

    def __init__(self, make_group: Callable[..., gym.vector.VectorEnv], task: TaskSpec | str, n_envs: int,
                 num_workers: int | None = None,
                 address: str | None = None, cpus_per_worker: float = 1.0, **env_kwargs: Any) -> None:
        if n_envs < 1:
            raise ValueError(f"n_envs: expected >= 1, got {n_envs}")
        task = load_task(task) if isinstance(task, str) else task
        if not ray.is_initialized():  # a local instance without dashboard, or join the cluster at `address`
            local = {"include_dashboard": False} if address is None else {}
            ray.init(address=address, log_to_driver=False, **local)
        if num_workers is None:
            num_workers = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_worker))
        if num_workers < 1:
            raise ValueError(f"num_workers: expected >= 1, got {num_workers}")
        num_workers = min(num_workers, n_envs)
        counts = [len(c) for c in np.array_split(np.arange(n_envs), num_workers)]
        self.offsets = np.cumsum([0, *counts])
        actor = ray.remote(num_cpus=cpus_per_worker)(_EnvGroup)
        self.workers = [actor.remote(make_group, task, count, env_kwargs) for count in counts]
        single_obs, single_action, metadata = ray.get(self.workers[0].spaces.remote())
        self.num_envs = n_envs
        self.single_observation_space, self.single_action_space = single_obs, single_action
        self.observation_space = batch_space(single_obs, n_envs)
        self.action_space = batch_space(single_action, n_envs)
        self.metadata = {**metadata, "ray_workers": num_workers}
        self.render_mode = None
        self._last_obs: list[Any] = [None] * num_workers  # per group, for partial resets

    def _groups(self) -> list[tuple[int, int]]:
        return list(zip(self.offsets[:-1].tolist(), self.offsets[1:].tolist()))

    def _join_infos(self, group_infos: list[dict[str, Any]], groups: list[tuple[int, int]]) -> dict[str, Any]:
        """The vector info of all envs from the groups' vector infos, built env by env as gymnasium builds it."""
        infos: dict[str, Any] = {}
        for info, (lo, hi) in zip(group_infos, groups):
            for j in range(hi - lo):
                infos = self._add_info(infos, _unbatch_info(info, j), lo + j)
        return infos

    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Like ``SyncVectorEnv.reset``: an int seed gives env i ``seed + i``; ``options['reset_mask']`` resets
        only the marked envs (the others keep their last observation)."""
        if seed is None or isinstance(seed, int):
            seed = [None if seed is None else seed + i for i in range(self.num_envs)]
        if len(seed) != self.num_envs:
            raise ValueError(f"seed: expected {self.num_envs} seeds, got {len(seed)}")
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        refs, groups, which = [], [], []
        for g, (lo, hi) in enumerate(self._groups()):
            group_options = dict(options)
            if mask is not None:
                if not mask[lo:hi].any():
                    continue
                group_options["reset_mask"] = np.asarray(mask[lo:hi])
            refs.append(self.workers[g].reset.remote(seed[lo:hi], group_options or None))
            groups.append((lo, hi))
            which.append(g)
        results = ray.get(refs)
        for g, (obs, _) in zip(which, results):
            self._last_obs[g] = obs
        infos = self._join_infos([info for _, info in results], groups)
        return _concat(self._last_obs), infos

    def step(self, actions: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions)
        if actions.shape[0] != self.num_envs:
            raise ValueError(f"actions: expected {self.num_envs} rows (one per env), got shape {actions.shape}")
        results = ray.get([w.step.remote(actions[lo:hi]) for w, (lo, hi) in zip(self.workers, self._groups())])
        self._last_obs = [r[0] for r in results]
        rewards, terminations, truncations = (np.concatenate([r[i] for r in results]) for i in (1, 2, 3))
        infos = self._join_infos([r[4] for r in results], self._groups())
        return _concat(self._last_obs), rewards, terminations, truncations, infos

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call ``name`` on every sub-environment (attributes are returned as they are)."""
        parts = ray.get([w.call.remote(name, args, kwargs) for w in self.workers])
        return tuple(value for part in parts for value in part)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        return self.call(name)

    def close_extras(self, **kwargs: Any) -> None:
        ray.get([w.close.remote() for w in self.workers])
        for w in self.workers:
            ray.kill(w)
        self.workers = []
