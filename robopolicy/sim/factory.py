"""Build single and vectorized environments for a task, with the standard wrappers in a fixed order.

Order (inside out): simulator env -> time limit -> dict observations -> success rule -> shield (optional,
``robopolicy.hal.shield_env``) -> video recorder -> multistep (chunk) execution. Vector envs are gymnasium's
sync or async envs of that stack; on 2 cores sync is faster at every size (see ENVIRONMENT.md), so it is the
default.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym

from robopolicy.sim.video import VideoRecorder
from robopolicy.sim.wrappers import DictObservation, MultiStepWrapper, SuccessInfo
from robopolicy.specs import ConfigError
from robopolicy.task import TaskSpec, load_task

if TYPE_CHECKING:
    from robopolicy.hal.shield_env import EnvShield


def _own_env(task: TaskSpec, kwargs: dict[str, Any]) -> gym.Env:
    from robopolicy.sim.push_puck import PushPuckEnv

    own = {"push_puck": PushPuckEnv}
    if task.env.id not in own:
        raise ValueError(f"task {task.name}: unknown own MuJoCo env {task.env.id!r} (known: {sorted(own)})")
    return own[task.env.id](video_size=task.video.width, **kwargs)


def make_base_env(task: TaskSpec, **env_kwargs: Any) -> gym.Env:
    """The simulator env with a time limit, dict observations and ``info['is_success']``; no chunking."""
    kwargs = {**task.env.kwargs, **env_kwargs}
    if task.env.backend == "gymnasium":
        env = gym.make(
            task.env.id, max_episode_steps=task.max_episode_steps, render_mode="rgb_array",
            width=task.video.width, height=task.video.height, **kwargs,
        )
        env = DictObservation(env, task.obs[0].key)
    elif task.env.backend == "robosuite":
        from robopolicy.sim.robosuite_env import RobosuiteEnv

        env = RobosuiteEnv(
            task.env.id, task.obs, video_camera=task.video.camera or "agentview", video_size=task.video.width, **kwargs
        )
        env = gym.wrappers.TimeLimit(env, task.max_episode_steps)
    else:
        env = gym.wrappers.TimeLimit(_own_env(task, kwargs), task.max_episode_steps)
    return SuccessInfo(env, task.success)


def make_env(
    task: TaskSpec | str,
    n_obs_steps: int | None = None,
    n_action_steps: int | None = None,
    video_dir: str | Path | None = None,
    video_seeds: Iterable[int] = (),
    video_every: int = 1,
    chunked: bool = True,
    shield: EnvShield | None = None,
    **env_kwargs: Any,
) -> gym.Env:
    """One environment for ``task``; horizons default to the task file's. ``chunked=False`` skips the
    multistep wrapper (single actions in, single observations out). ``shield``: every action goes through
    that hardware file's shield (``robopolicy.hal.shield_env.env_shield``), as on the robot."""
    task = load_task(task) if isinstance(task, str) else task
    env = make_base_env(task, **env_kwargs)
    if shield is not None:
        env = shield.wrap(env)
    if video_dir is not None:
        env = VideoRecorder(env, video_dir, video_seeds, fps=task.video.fps, every=video_every)
    if chunked:
        env = MultiStepWrapper(
            env, n_obs_steps or task.horizons.n_obs_steps, n_action_steps or task.horizons.n_action_steps
        )
    return env


def make_vector_env(
    task: TaskSpec | str, n_envs: int, asynchronous: bool = False, backend: str = "local",
    ray_workers: int | None = None, ray_address: str | None = None, same_step_autoreset: bool = False,
    **kwargs: Any
) -> gym.vector.VectorEnv:
    """``n_envs`` copies of :func:`make_env` in a gymnasium sync or async vector env.

    ``backend="ray"`` hosts them in ``ray_workers`` Ray actors instead (a local Ray, or the cluster at
    ``ray_address``; :class:`robopolicy.sim.ray_vector.RayVectorEnv`), each running a local vector env of its
    share built by this function, so both backends step and autoreset alike.

    Autoreset is gymnasium's default (next step), so the info returned with ``done`` is the real final
    info; robosuite workers are spawned, not forked, because its GL context does not survive a fork.
    ``same_step_autoreset`` resets an ended episode within the same call (final observation and info in
    ``info["final_obs"]`` / ``info["final_info"]``), so no call is spent on a reset that ignores its action;
    the RL collector (``robopolicy.rl.collector``) needs it.
    """
    task = load_task(task) if isinstance(task, str) else task
    if backend == "ray":
        return _ray_vector_env(task, n_envs, ray_workers, ray_address, asynchronous=asynchronous,
                               same_step_autoreset=same_step_autoreset, **kwargs)
    if backend != "local":
        raise ConfigError(f"vector_backend: expected 'local' or 'ray', got {backend!r}")
    fns = [partial(make_env, task, **kwargs) for _ in range(n_envs)]
    mode = gym.vector.AutoresetMode.SAME_STEP if same_step_autoreset else gym.vector.AutoresetMode.NEXT_STEP
    if asynchronous:
        return gym.vector.AsyncVectorEnv(fns, context="spawn" if task.env.backend == "robosuite" else None,
                                         autoreset_mode=mode)
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)


def _ray_vector_env(task: TaskSpec, n_envs: int, workers: int | None, address: str | None,
                    **kwargs: Any) -> gym.vector.VectorEnv:
    try:
        from robopolicy.sim.ray_vector import RayVectorEnv
    except ModuleNotFoundError as exc:
        if exc.name != "ray":
            raise
        raise ConfigError("vector_backend: 'ray' needs Ray, which is not installed "
                          "(pip install 'robopolicy[dist]'), or use 'local'") from exc
    return RayVectorEnv(make_vector_env, task, n_envs, num_workers=workers, address=address, **kwargs)
