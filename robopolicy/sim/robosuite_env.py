"""robosuite tasks behind the gymnasium interface, with robomimic's observation keys.

robosuite is imported lazily (it is slow to import, JIT-compiles its controller on first use and forces
``MUJOCO_GL``), so nothing else in robopolicy pays for it unless a robosuite task is built.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from robopolicy.specs import ObsSpec

# robomimic's low-dim key for the object state; every other key is robosuite's own name.
_KEY_TO_ROBOSUITE = {"object": "object-state"}
_IMAGE_SUFFIX = "_image"


def _space(spec: ObsSpec) -> gym.spaces.Box:
    if spec.kind == "rgb":
        return gym.spaces.Box(0, 255, spec.shape, np.uint8)
    return gym.spaces.Box(-np.inf, np.inf, spec.shape, np.float32)


class RobosuiteEnv(gym.Env):
    """One robosuite environment. Images are flipped to the usual top-down row order and rendered without
    shadows or reflections; ``reset(seed=...)`` reseeds robosuite's own generator, so object placements
    repeat. ``collect_dir`` records every episode through robosuite's ``DataCollectionWrapper``, which
    rebuilds the simulation at each reset: pass ``render_mode=None`` there to skip making a GL context.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        env_name: str,
        obs: list[ObsSpec],
        robots: str = "Panda",
        control_freq: int = 20,
        video_camera: str = "agentview",
        video_size: int = 256,
        terminate_on_success: bool = True,
        collect_dir: str | None = None,
        render_mode: str | None = "rgb_array",
        **kwargs: Any,
    ) -> None:
        import robosuite

        self.specs = obs
        cameras = [o.key.removesuffix(_IMAGE_SUFFIX) for o in obs if o.kind == "rgb"]
        sizes = [o.shape[:2] for o in obs if o.kind == "rgb"] or [(84, 84)]  # (height, width) per camera
        self.env = robosuite.make(
            env_name,
            robots=robots,
            has_renderer=False,
            has_offscreen_renderer=bool(cameras) or render_mode is not None,
            use_camera_obs=bool(cameras),
            camera_names=cameras or "agentview",
            camera_heights=[h for h, _ in sizes],
            camera_widths=[w for _, w in sizes],
            control_freq=control_freq,
            ignore_done=True,
            hard_reset=False,
            **kwargs,
        )
        if cameras:
            self._use_fast_rendering()
        if collect_dir is not None:
            from robosuite.wrappers import DataCollectionWrapper

            self.env = DataCollectionWrapper(self.env, collect_dir)
        self.video_camera = video_camera
        self.video_size = video_size
        self.render_mode = render_mode
        self.terminate_on_success = terminate_on_success
        self.observation_space = gym.spaces.Dict({o.key: _space(o) for o in obs})
        low, high = self.env.action_spec
        self.action_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32))

    def _use_fast_rendering(self) -> None:
        """Turn off shadows and reflections on robosuite's offscreen scene (~2x faster camera observations).

        The context is robosuite's own; making a second one without a shadow map fails under EGL here
        ("Default framebuffer is not complete"), so multisampling stays as robosuite set it.
        """
        import mujoco

        scene = self.env.sim._render_context_offscreen.scn
        scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0

    def _obs(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for spec in self.specs:
            value = raw[_KEY_TO_ROBOSUITE.get(spec.key, spec.key)]
            if spec.kind == "rgb":
                out[spec.key] = np.ascontiguousarray(value[::-1])
            else:
                out[spec.key] = np.asarray(value, dtype=np.float32)
        return out

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            # robosuite's placement samplers and robot init noise hold references to env.rng: reseed in place
            self.env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        raw = self.env.reset()
        return self._obs(raw), {"is_success": False}

    def step(self, action: np.ndarray):
        raw, reward, _, info = self.env.step(np.asarray(action, dtype=np.float64))
        success = bool(self.env._check_success())
        info = dict(info, is_success=success)
        return self._obs(raw), float(reward), success and self.terminate_on_success, False, info

    def observe_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """Observations for a flattened MuJoCo state: robomimic's states-to-observations replay."""
        self.env.sim.set_state_from_flattened(state)
        self.env.sim.forward()
        return self._obs(self.env._get_observations(force_update=True))

    def render(self) -> np.ndarray:
        frame = self.env.sim.render(camera_name=self.video_camera, height=self.video_size, width=self.video_size)
        return np.ascontiguousarray(frame[::-1])

    def close(self) -> None:
        self.env.close()
