"""Task specifications read from ``tasks/*.toml``: what a task is, separate from how a policy solves it.

A task file names the environment and its kwargs, the observation keys and their kinds, the action
layout and convention, the episode length, the success rule, the reward, default horizons and a
default training recipe. Nothing here imports a simulator (core layer, stdlib only): the trainer reads a
task's recipe and ``robopolicy tasks`` lists them without loading MuJoCo or robosuite.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from robopolicy.specs import ActionSpec, ChunkSpec, ConfigError, ObsSpec, from_dict, read_toml, resolve_toml, to_dict

TASKS_DIR = Path(__file__).resolve().parents[1] / "tasks"


@dataclass
class EnvSpec:
    """Which simulator builds the environment. ``mujoco`` means one of our own plain-MuJoCo tasks."""

    backend: Literal["gymnasium", "robosuite", "mujoco"]
    id: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class SuccessRule:
    """When an episode counts as a success; checked at every step, an episode succeeds once it is met.

    ``info``: ``info[key]`` is true. ``info_threshold``: ``info[key] >= min``. ``none``: no success
    notion (locomotion), evaluation reports returns only.
    """

    type: Literal["none", "info", "info_threshold"] = "none"
    key: str = "is_success"
    min: float = 0.0
    description: str = ""


@dataclass
class VideoSpec:
    """Camera and size for rollout videos (pretty rendering; observations use the fast settings)."""

    width: int = 256
    height: int = 256
    camera: str = ""
    fps: int = 20


@dataclass
class ExpertSpec:
    """The scripted or trained expert that collects demonstrations for this task."""

    name: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskSpec:
    """One task, as read from ``tasks/<name>.toml``."""

    name: str
    description: str
    env: EnvSpec
    obs: list[ObsSpec]
    action: ActionSpec
    action_description: str
    max_episode_steps: int
    reward: str
    success: SuccessRule = field(default_factory=SuccessRule)
    horizons: ChunkSpec = field(default_factory=ChunkSpec)  # the default chunking of this task's recipe
    video: VideoSpec = field(default_factory=VideoSpec)
    expert: ExpertSpec = field(default_factory=ExpertSpec)
    fast: bool = False
    recipe: dict[str, Any] = field(default_factory=dict)

    @property
    def obs_keys(self) -> list[str]:
        return [o.key for o in self.obs]

    @property
    def has_success(self) -> bool:
        return self.success.type != "none"

    def run_config_dict(self) -> dict[str, Any]:
        """The default training recipe as a ``RunConfig`` dict, with this task's specs and horizons filled in."""
        recipe = copy.deepcopy(self.recipe)
        policy = recipe.setdefault("policy", {})
        policy.setdefault("obs", [to_dict(o) for o in self.obs])
        policy.setdefault("action", to_dict(self.action))
        for name in ("n_obs_steps", "horizon", "n_action_steps"):
            policy.setdefault(name, getattr(self.horizons, name))
        return recipe


def task_path(name_or_path: str | Path) -> Path:
    """Resolve a task name (``lift``) or a path to a TOML file."""
    return resolve_toml(name_or_path, TASKS_DIR, "task")


def load_task(name_or_path: str | Path) -> TaskSpec:
    """Read and validate one task file; errors name the file and the field."""
    path = task_path(name_or_path)
    data = read_toml(path)
    try:
        return from_dict(TaskSpec, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def list_tasks(tasks_dir: Path = TASKS_DIR) -> list[str]:
    """Names of all task files, sorted."""
    return sorted(p.stem for p in tasks_dir.glob("*.toml"))
