"""``mujoco`` backend: the robot simulated in MuJoCo behind the Backend API (sim-in-the-loop).

Two scenes, chosen by the hardware file:

* the bare robot (``mjcf``, e.g. robosuite's Panda) on a floor with a light and a ``front`` camera. Torque
  actuators are driven by a joint PD controller with gravity compensation (``qfrc_bias``), clipped to the
  file's torque limits; each :meth:`~Backend.write` interpolates from the previous target to the new one and
  simulates one control period. ``joint_position`` and ``joint_velocity`` commands.
* a task's scene (``task = "lift"``, ``task = "push_puck"``): the task's simulated environment
  (``robopolicy.sim.make_base_env``; robosuite's or an own MuJoCo task's), each write one environment step with the
  task's actions (robosuite's end-effector deltas and gripper; push_puck's absolute pusher targets, which are joint
  positions of its two slide joints).
  :meth:`MujocoBackend.reset_scene` and :attr:`MujocoBackend.last_step` (reward, termination, success) let the
  evaluation adapter (``robopolicy.hal.env``) run the simulation protocol through this backend.

Simulated time advances only in writes, so a run is reproducible and as fast as the CPU allows; the executor
paces it in real time. Camera frames use the fast rendering settings (no shadows, reflections or multisampling).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robopolicy.hal.backend import Backend, Command, Observation, State, clock
from robopolicy.hal.spec import HardwareSpec
from robopolicy.specs import ConfigError

_RESETTABLE = (State.CONNECTED, State.ARMED, State.RUNNING)
SCENE_CAMERA = "front"  # added to the bare robot's scene; hardware files may name it


@dataclass
class StepResult:
    """What the last write did to a task's scene (sim only)."""

    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] | None = None


def _scene_model(env: Any) -> tuple[Any, Any]:
    """The ``MjModel`` and ``MjData`` behind a task's environment: robosuite's (``env.env.sim``) or those of an own
    MuJoCo task (``env.model``, ``env.data``, e.g. push_puck)."""
    inner = getattr(env, "env", None)
    if inner is not None and hasattr(inner, "sim"):
        return inner.sim.model._model, inner.sim.data._data
    return env.model, env.data


def _per_joint_gain(spec: HardwareSpec, key: str, gain: float | Sequence[float]) -> np.ndarray:
    """A scalar gain broadcast to every joint, or a list checked to hold one value per joint."""
    values = np.broadcast_to(np.asarray(gain, dtype=np.float64), (len(spec.joints),)) if np.ndim(gain) == 0 \
        else np.asarray(gain, dtype=np.float64)
    if values.shape != (len(spec.joints),) or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ConfigError(f"{spec.path or spec.name}: backend.{key}: expected one finite gain >= 0 or a list of "
                          f"{len(spec.joints)} (one per joint), got {gain!r}")
    return values


class MujocoBackend(Backend):
    """Simulated robot. ``kp``/``kd``: PD gains (Nm/rad, Nm s/rad) of the bare robot's joint controller, one for
    every joint or a list with one per joint (light wrists need far smaller gains than the shoulder).
    ``prefix``: what the task's scene puts before the hardware file's joint and body names (robosuite: robot0_).
    ``realtime=False`` turns off the wall-clock faults (stale feedback, latency) for runs that are not paced in
    real time, such as an evaluation as fast as the CPU allows."""

    name = "mujoco"

    def __init__(self, spec: HardwareSpec, kp: float | Sequence[float] = 400.0, kd: float | Sequence[float] = 40.0,
                 prefix: str = "",
                 stale_periods: float = 5.0, latency_periods: float = 5.0, realtime: bool = True,
                 **env_kwargs: Any) -> None:
        if not realtime:  # simulated time is decoupled from the wall clock: a slow step is no fault
            stale_periods = latency_periods = math.inf
        super().__init__(spec, stale_periods=stale_periods, latency_periods=latency_periods)
        if not spec.task and spec.control_mode == "ee_delta":
            raise ConfigError(f"{spec.path or spec.name}: control_mode: the bare mujoco robot takes joint_position "
                              "or joint_velocity commands (ee_delta needs a task scene with its own controller)")
        self.kp, self.kd = (_per_joint_gain(spec, name, gain) for name, gain in (("kp", kp), ("kd", kd)))
        self.prefix = prefix
        self.env_kwargs = env_kwargs
        self.last_step = StepResult()
        self.env: Any = None
        self.model: Any = None
        self.data: Any = None
        self._renderers: dict[tuple[int, int], Any] = {}
        self._task_obs: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ scene
    def _connect(self) -> None:
        import os
        import sys

        # asked before importing robopolicy.sim, whose import chooses a GL backend (too late once mujoco is in)
        late = not os.environ.get("MUJOCO_GL") and "mujoco" in sys.modules
        from robopolicy.sim.rendering import select_gl_backend

        if late and self.spec.cameras:
            raise ConfigError("mujoco was imported before a headless GL backend was chosen, so cameras cannot "
                              "render: set MUJOCO_GL (egl or osmesa), or call robopolicy.sim.rendering."
                              "select_gl_backend() before the first import of mujoco")
        select_gl_backend()
        import mujoco

        if self.spec.task:
            from robopolicy.sim import make_base_env
            from robopolicy.task import load_task

            self.env = make_base_env(load_task(self.spec.task), **self.env_kwargs)
            self._task_obs = {}  # reset on first use: a scene reset first to a seed runs as the task's own env does
            self.model, self.data = _scene_model(self.env.unwrapped)
        else:
            scene = mujoco.MjSpec.from_file(self.spec.mjcf)
            scene.worldbody.add_light(pos=[0, 0, 3], dir=[0, 0, -1], diffuse=[0.8, 0.8, 0.8])
            scene.worldbody.add_geom(type=mujoco.mjtGeom.mjGEOM_PLANE, size=[2, 2, 0.1], rgba=[0.4, 0.45, 0.5, 1])
            # a camera in front of the robot, looking at (0.3, 0, 0.4) from (1.5, 0, 0.8)
            scene.worldbody.add_camera(name=SCENE_CAMERA, pos=[1.5, 0, 0.8], xyaxes=[0, 1, 0, -0.316, 0, 0.949])
            self.model = scene.compile()
            self.data = mujoco.MjData(self.model)
        self._index()
        if not self.spec.task:
            self.data.qpos[self._qadr] = self.spec.home
            mujoco.mj_forward(self.model, self.data)
        self._target = self.data.qpos[self._qadr].copy()
        for cam in [] if self.spec.task else self.spec.cameras:  # make the GL contexts now, not in the first read
            self._render(cam.name, cam.height, cam.width)

    def _index(self) -> None:
        """Joint addresses, the end-effector and base frames, and the cameras, by name; a missing one is an error
        naming the hardware file's key."""
        import mujoco

        def find(kind: mujoco.mjtObj, name: str, key: str) -> int:
            idx = mujoco.mj_name2id(self.model, kind, self.prefix + name)
            if idx < 0:
                raise ConfigError(f"{self.spec.path or self.spec.name}: {key}: {self.prefix + name!r} is not in the "
                                  "MuJoCo model")
            return idx

        joints = [find(mujoco.mjtObj.mjOBJ_JOINT, j, "joints") for j in self.spec.joints]
        kinds = {mujoco.mjtJoint.mjJNT_HINGE: "rad", mujoco.mjtJoint.mjJNT_SLIDE: "m"}
        for i, (j, kind) in enumerate(zip(joints, self.spec.joint_kinds)):
            if kinds.get(self.model.jnt_type[j]) != kind:
                raise ConfigError(f"{self.spec.path or self.spec.name}: units.position: joint {self.spec.joints[i]!r} "
                                  f"is in {kind!r}, but the MuJoCo model's joint is of type "
                                  f"{mujoco.mjtJoint(self.model.jnt_type[j]).name} (hinge: rad, slide: m)")
        self._qadr = np.array([self.model.jnt_qposadr[j] for j in joints])
        self._vadr = np.array([self.model.jnt_dofadr[j] for j in joints])
        ee_kind = mujoco.mjtObj.mjOBJ_SITE if self.spec.ee_kind == "site" else mujoco.mjtObj.mjOBJ_BODY
        self._ee = find(ee_kind, self.spec.ee_site, "ee_site")
        self._base = find(mujoco.mjtObj.mjOBJ_BODY, self.spec.base_frame, "base_frame")
        if not self.spec.task:
            self._actuators = np.array([int(np.flatnonzero(self.model.actuator_trnid[:, 0] == j)[0]) for j in joints])
            for cam in self.spec.cameras:
                find(mujoco.mjtObj.mjOBJ_CAMERA, cam.name, "cameras")

    def _disconnect(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
        if self.env is not None:
            self.env.close()
            self.env = None

    def reset_scene(self, seed: int | None = None) -> Observation:
        """Reset the simulation (a task's scene: its initial conditions for ``seed``); sim only, while connected
        or armed. Returns the first observation."""
        self._require("reset_scene", *_RESETTABLE)
        import mujoco

        with self._lock:
            if self.env is not None:
                self._task_obs, info = self.env.reset(seed=seed)
                self.last_step = StepResult(info=info)
            else:
                mujoco.mj_resetData(self.model, self.data)
                self.data.qpos[self._qadr] = self.spec.home
                mujoco.mj_forward(self.model, self.data)
                self.last_step = StepResult()
            self._target = self.data.qpos[self._qadr].copy()
        return self.read()

    # ------------------------------------------------------------------ I/O
    def _scene_ready(self) -> None:
        if self.env is not None and not self._task_obs:
            self._task_obs, _ = self.env.reset()

    def _read(self) -> Observation:
        self._scene_ready()
        images: dict[str, np.ndarray] = {}
        extras: dict[str, np.ndarray] = {}
        stamps: dict[str, float] = {}
        if self.env is None:  # frames first (slow on a CPU), so the joint state below is the freshest field
            for cam in self.spec.cameras:
                images[cam.name] = self._render(cam.name, cam.height, cam.width)
                stamps[f"images/{cam.name}"] = clock()
        t = clock()
        d = self.data
        position = d.qpos[self._qadr].copy()
        velocity = d.qvel[self._vadr].copy()
        torque = d.qfrc_actuator[self._vadr].copy()
        ee_world = d.site_xpos[self._ee] if self.spec.ee_kind == "site" else d.xpos[self._ee]
        rot = d.xmat[self._base].reshape(3, 3)
        ee = rot.T @ (ee_world - d.xpos[self._base])
        stamps.update(position=t, velocity=t, torque=t, ee_position=t)
        if self.env is not None:
            for key, value in self._task_obs.items():  # camera keys are <camera>_image in every task file
                if value.dtype == np.uint8 and value.ndim == 3:
                    images[key.removesuffix("_image")] = value
                    stamps[f"images/{key.removesuffix('_image')}"] = t
                else:
                    extras[key] = value
                    stamps[f"extras/{key}"] = t
        return Observation(position, velocity, torque, t, self.next_seq(), ee_position=ee, images=images,
                           extras=extras, stamps=stamps)

    def _render(self, camera: str, height: int, width: int) -> np.ndarray:
        from robopolicy.sim.rendering import make_renderer, render

        key = (height, width)
        if key not in self._renderers:
            self._renderers[key] = make_renderer(self.model, height, width, fast=True)
        return render(self._renderers[key], self.data, self.prefix + camera)

    def _write(self, command: Command) -> Command:
        self._scene_ready()
        if self.env is not None:
            self._task_obs, reward, terminated, truncated, info = self.env.step(command.value)
            self.last_step = StepResult(float(reward), bool(terminated), bool(truncated), info)
        else:
            self._simulate(command.value[: self.spec.n_joints])
        return Command(command.value.copy(), command.mode, command.t_target, command.seq, t_applied=clock())

    def _simulate(self, value: np.ndarray) -> None:
        """One control period of PD + gravity compensation towards the new target, interpolated per substep."""
        import mujoco

        m, d = self.model, self.data
        n_sub = max(1, round(self.spec.period_s / m.opt.timestep))
        tau_max = np.asarray(self.spec.limits.torque)
        velocity_mode = self.spec.control_mode == "joint_velocity"
        start = self._target.copy()
        goal = start + value * self.spec.period_s if velocity_mode else value
        for i in range(1, n_sub + 1):
            q_des = start + (goal - start) * (i / n_sub)
            dq_des = value if velocity_mode else (goal - start) / self.spec.period_s
            tau = (self.kp * (q_des - d.qpos[self._qadr]) + self.kd * (dq_des - d.qvel[self._vadr])
                   + d.qfrc_bias[self._vadr])
            d.ctrl[self._actuators] = np.clip(tau, -tau_max, tau_max)
            mujoco.mj_step(m, d)
        self._target = goal.copy()

    def _hold(self) -> None:
        if self.env is not None:
            return  # the task's own controller keeps the pose: with no further steps the scene stands still
        self._target = self.data.qpos[self._qadr].copy()  # the PD controller brakes the arm in the next steps

