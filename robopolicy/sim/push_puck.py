"""PushPuck: our own plain-MuJoCo manipulation task, fast enough for CPU fine-tuning and CI.

A blue pusher (position-controlled in the plane) must push an orange puck onto a green goal disc.
The pusher starts away from the side it has to push from, so it must go around the puck either
clockwise or counter-clockwise: demonstrations are multimodal, like Push-T's. Only four slide joints
and one contact pair, so it steps at thousands of control steps per second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from robopolicy.sim.rendering import make_renderer, render

ASSET = Path(__file__).parent / "assets" / "push_puck.xml"
ARENA = 0.25
PUCK_RADIUS = 0.04
PUSHER_RADIUS = 0.015


class PushPuckEnv(gym.Env):
    """Observation keys: ``state`` (pusher xy, puck xy, goal xy), ``agent_pos`` (pusher xy) and, when
    ``image_size`` is set, ``image`` (top camera, uint8 HWC, fast rendering). Action: absolute pusher
    target xy in metres, clipped to the arena. Reward: minus the puck-goal distance; the episode ends
    with success once the puck centre is within ``success_radius`` of the goal."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        image_size: int | None = None,
        frame_skip: int = 10,
        success_radius: float = 0.02,
        render_mode: str | None = "rgb_array",
        video_size: int = 256,
    ) -> None:
        self.model = mujoco.MjModel.from_xml_path(str(ASSET))
        self.data = mujoco.MjData(self.model)
        self.frame_skip = frame_skip
        self.success_radius = success_radius
        self.render_mode = render_mode
        self.image_size = image_size
        self.video_size = video_size
        self._obs_renderer = None
        self._video_renderer = None
        self._goal = np.zeros(2)
        spaces: dict[str, gym.Space] = {
            "state": gym.spaces.Box(-ARENA, ARENA, (6,), np.float32),
            "agent_pos": gym.spaces.Box(-ARENA, ARENA, (2,), np.float32),
        }
        if image_size:
            spaces["image"] = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-ARENA, ARENA, (2,), np.float32)

    # -- state ------------------------------------------------------------------------------------
    @property
    def pusher_pos(self) -> np.ndarray:
        return self.data.qpos[0:2].copy()

    @property
    def puck_pos(self) -> np.ndarray:
        return self.data.qpos[2:4].copy()

    def _distance(self) -> float:
        return float(np.linalg.norm(self.puck_pos - self._goal))

    def _obs(self) -> dict[str, np.ndarray]:
        state = np.concatenate([self.pusher_pos, self.puck_pos, self._goal]).astype(np.float32)
        obs = {"state": state, "agent_pos": state[:2].copy()}
        if self.image_size:
            if self._obs_renderer is None:
                self._obs_renderer = make_renderer(self.model, self.image_size, self.image_size, fast=True)
            obs["image"] = render(self._obs_renderer, self.data, "top")
        return obs

    def get_state(self) -> np.ndarray:
        """The full MuJoCo integration state (time, qpos, qvel, ctrl, mocap goal, ...), for recording demos."""
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mujoco.mj_stateSize(self.model, spec))
        mujoco.mj_getState(self.model, self.data, state, spec)
        return state

    def observe_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """Observations for a state from :meth:`get_state`: robomimic's states-to-observations replay."""
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        mujoco.mj_setState(self.model, self.data, np.asarray(state, dtype=np.float64), spec)
        self._goal = self.data.mocap_pos[0, :2].copy()
        mujoco.mj_forward(self.model, self.data)
        return self._obs()

    # -- gym API ----------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        mujoco.mj_resetData(self.model, self.data)
        puck = rng.uniform(-0.12, 0.12, 2)
        while True:  # goal far enough from the puck that the task needs a real push
            goal = rng.uniform(-0.17, 0.17, 2)
            if np.linalg.norm(goal - puck) > 0.08:
                break
        # start the pusher on the far side of the puck from where it must push, offset sideways
        away = (goal - puck) / np.linalg.norm(goal - puck)
        side = np.array([-away[1], away[0]]) * rng.uniform(-0.06, 0.06)
        pusher = np.clip(puck + away * rng.uniform(0.07, 0.1) + side, -0.22, 0.22)
        self.data.qpos[:] = np.concatenate([pusher, puck])
        self.data.ctrl[:] = pusher
        self._goal = goal
        self.data.mocap_pos[0, :2] = goal
        mujoco.mj_forward(self.model, self.data)
        return self._obs(), {"is_success": False, "distance": self._distance()}

    def step(self, action: np.ndarray):
        self.data.ctrl[:] = np.clip(np.asarray(action, dtype=np.float64), -ARENA, ARENA)
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        distance = self._distance()
        success = distance < self.success_radius
        info = {"is_success": success, "distance": distance}
        return self._obs(), -distance, success, False, info

    def render(self) -> np.ndarray:
        """A pretty frame (shadows on) from the top camera for videos."""
        if self._video_renderer is None:
            self._video_renderer = make_renderer(self.model, self.video_size, self.video_size, fast=False)
        return render(self._video_renderer, self.data, "top")

    def close(self) -> None:
        for renderer in (self._obs_renderer, self._video_renderer):
            if renderer is not None:
                renderer.close()
        self._obs_renderer = self._video_renderer = None
