"""Observations rebuilt from recorded simulator states, for `robopolicy data regenerate` and demo collection.

A :class:`StateObserver` builds the task's environment once and turns each flattened state into the task's
observations plus any extra cameras (``NAME:HxW``, stored as ``NAME_image``): robosuite renders them as its
camera observations (so they match what a live robosuite env returns), plain-MuJoCo tasks through the fast
renderer of ``robopolicy.sim.rendering``.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np

from robopolicy.sim.factory import make_base_env
from robopolicy.sim.rendering import make_renderer, render
from robopolicy.specs import ConfigError, ObsSpec
from robopolicy.task import TaskSpec

_CAMERA = re.compile(r"^(?P<name>[A-Za-z0-9_\-]+):(?P<h>\d+)x(?P<w>\d+)$")


def parse_camera(text: str) -> tuple[str, int, int]:
    """``NAME:HxW`` -> (name, height, width)."""
    match = _CAMERA.match(text)
    if not match:
        raise ConfigError(f"--cameras {text!r}: expected NAME:HxW, e.g. agentview:84x84")
    return match["name"], int(match["h"]), int(match["w"])


class StateObserver:
    """Observations of `task` (its observation keys plus `cameras`) for states recorded in its simulator."""

    def __init__(self, task: TaskSpec, cameras: list[tuple[str, int, int]] = ()) -> None:
        extra = [ObsSpec(key=f"{name}_image", shape=(h, w, 3), kind="rgb") for name, h, w in cameras]
        taken = {o.key for o in task.obs}
        for spec in extra:
            if spec.key in taken:
                raise ConfigError(f"--cameras: {spec.key} is already an observation of task {task.name}")
        if task.env.backend not in ("robosuite", "mujoco"):
            raise ConfigError(f"task {task.name}: {task.env.backend} environments cannot replay recorded states")
        self.robosuite = task.env.backend == "robosuite"
        self.specs = [*task.obs, *extra]
        # robosuite renders the extra cameras as observations of its own; other tasks render them here.
        built = dataclasses.replace(task, obs=self.specs) if self.robosuite else task
        self.env = make_base_env(built, render_mode=None)
        self.sim: Any = self.env.unwrapped
        self._renderers = {} if self.robosuite else {
            name: make_renderer(self.sim.model, h, w, fast=True) for name, h, w in cameras
        }

    @property
    def features(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """{obs key: (shape, dtype)} of what :meth:`observe` returns."""
        return {o.key: (tuple(o.shape), "uint8" if o.kind == "rgb" else "float32") for o in self.specs}

    @property
    def versions(self) -> dict[str, str]:
        """The simulator versions the states were replayed with (robosuite drifts between releases)."""
        import mujoco

        out = {"mujoco": mujoco.__version__}
        if self.robosuite:
            import robosuite

            out["robosuite"] = robosuite.__version__
        return out

    def start_episode(self) -> None:
        """Reset before an episode's states, so that the simulator holds the task's model (robosuite)."""
        self.env.reset(seed=0)

    def observe(self, state: np.ndarray) -> dict[str, np.ndarray]:
        obs = self.sim.observe_state(state)
        for name, renderer in self._renderers.items():
            obs[f"{name}_image"] = render(renderer, self.sim.data, name)
        return obs

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self.env.close()
