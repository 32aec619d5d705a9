"""The shield inside a training or evaluation environment, so a policy learns and is judged under the constraints
it will be deployed with (the same :class:`~robopolicy.hal.shield.Shield` that guards the robot).

:class:`ShieldedEnv` wraps a single-step gymnasium env whose actions are the robot's commands: every action is
shielded before the env sees it; the measured joint positions (read from the observation) are checked against
the hard limits after every step, a violation ending the episode (``terminated``, ``info["shield_fault"]``).
``info["shield"]`` says per step whether and how much the shield intervened.

CaT (constraints as terminations, Chane-Sane et al. 2024) is optional: a step whose raw action the shield had to
correct ends the episode with probability ``min(1, amount / cat_scale)`` (1 for a non-finite action), so the
policy gradient sees constraint violations as lost future reward instead of silently corrected actions. That
holds only where the future reward is positive (CaT's own tasks); ``cat_penalty`` is subtracted from the reward
of the step CaT ends, so that ending is a loss on tasks whose rewards are negative too.

:class:`EnvShield` is what ``robopolicy.sim.make_env(..., shield=...)`` takes (``finetune --shield``, ``eval
--shield``): a picklable description from which every sub-env of a vector env (sync, async or Ray) builds its own
shield, reading the measured joints from the simulator's own MuJoCo state (:class:`ScenePosition`).
:func:`pop_shield_counts` sums and clears the sub-envs' intervention counts through the vector env's ``call``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from robopolicy.hal.shield.ee_delta import EeDeltaShield
from robopolicy.hal.shield.hardware import ShieldOptions, build_shield
from robopolicy.hal.shield.pipeline import EpisodeCounts, Shield, ShieldFault, ShieldStep
from robopolicy.hal.spec import HardwareSpec, load_hardware
from robopolicy.specs import ConfigError
from robopolicy.task import TaskSpec

PositionFn = Callable[[Any], np.ndarray]


def _position_reader(position: str | PositionFn) -> PositionFn:
    if callable(position):
        return position
    return lambda obs: np.asarray(obs[position], dtype=float)


class ShieldedEnv(gym.Wrapper):
    """``position``: the observation key holding the measured joint positions, or a function of the observation."""

    def __init__(self, env: gym.Env, shield: Shield | EeDeltaShield, position: str | PositionFn = "joint_position",
                 cat: bool = False, cat_scale: float = 0.1, cat_penalty: float = 0.0) -> None:
        super().__init__(env)
        if cat_scale <= 0:
            raise ValueError(f"cat_scale must be > 0, got {cat_scale}")
        if not (np.isfinite(cat_penalty) and cat_penalty >= 0):
            raise ValueError(f"cat_penalty must be finite and >= 0, got {cat_penalty}")
        self.shield, self.cat, self.cat_scale, self.cat_penalty = shield, cat, float(cat_scale), float(cat_penalty)
        self._position = _position_reader(position)
        self._seed: int | None = None
        self._clear_counts()

    def _clear_counts(self) -> None:
        self.totals = EpisodeCounts()  # every step (the shield's own counts restart at every reset)
        self.cat_terminations = self.faults = 0
        self.finished: list[dict[str, Any]] = []

    def pop_shield_counts(self) -> dict[str, Any]:
        """Counts since the last call (or construction), then cleared; read through a vector env's ``call`` by
        :func:`pop_shield_counts`. ``totals``: every step; ``episodes``: each finished episode's counts with the
        seed it was reset with (None after an autoreset). ``cat_terminations``: episodes CaT ended; ``faults``:
        episodes ended by a measured state beyond the hard limits."""
        counts = {"totals": dict(self.totals.to_dict(), cat_terminations=self.cat_terminations, faults=self.faults),
                  "episodes": self.finished}
        self._clear_counts()
        return counts

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._seed = kwargs.get("seed")
        self.shield.reset(self._position(obs))  # a start outside the hard limits is a ShieldFault: a broken env
        return obs, info

    def step(self, action):
        step = self.shield(action)
        self.totals.add(step)
        obs, reward, terminated, truncated, info = self.env.step(step.command)
        info = dict(info, shield=self._step_info(step))
        fault = cat_ended = False
        try:
            self.shield.check_measured(self._position(obs))
        except ShieldFault as exc:
            terminated, info["shield_fault"], fault = True, str(exc), True
        if self.cat and step.intervened:
            p = self.termination_probability(step)
            info["cat_termination_prob"] = p
            cat_ended = not terminated and bool(self.np_random.random() < p)
            terminated = terminated or cat_ended
            reward = reward - self.cat_penalty if cat_ended else reward
        self.faults += fault
        self.cat_terminations += cat_ended
        if terminated or truncated:
            self.finished.append(dict(self.shield.counts.to_dict(), env_seed=self._seed,
                                      cat_terminations=int(cat_ended), faults=int(fault)))
        return obs, reward, terminated, truncated, info

    def termination_probability(self, step: ShieldStep) -> float:
        """CaT's probability for one step: the largest correction relative to ``cat_scale``, capped at 1."""
        amount = max((i.amount for i in step.interventions), default=0.0)
        if step.fallback is not None or not np.isfinite(amount):
            return 1.0
        return float(min(1.0, amount / self.cat_scale))

    @staticmethod
    def _step_info(step: ShieldStep) -> dict[str, Any]:
        amounts = [i.amount for i in step.interventions]
        return {"intervened": step.intervened, "stages": [i.stage for i in step.interventions],
                "amount": max(amounts, default=0.0), "fallback": step.fallback}


class ScenePosition:
    """The measured positions of ``spec.joints`` in the simulator's own state (the MuJoCo model behind
    ``env.unwrapped``, with the mujoco backend's ``prefix`` setting), not in the observation: the shield checks what
    the simulator did. Addresses are looked up again when the env rebuilds its model (robosuite's hard reset)."""

    def __init__(self, env: gym.Env, spec: HardwareSpec) -> None:
        self.env, self.spec = env, spec
        self.prefix = str(spec.backend.settings.get("prefix", ""))
        self._model: Any = None
        self._qadr = np.zeros(0, int)

    def __call__(self, obs: Any) -> np.ndarray:
        from robopolicy.hal.mujoco_backend import _scene_model

        model, data = _scene_model(self.env.unwrapped)
        if model is not self._model:
            self._qadr, self._model = self._addresses(model), model
        return np.array(data.qpos[self._qadr], dtype=float)

    def _addresses(self, model: Any) -> np.ndarray:
        import mujoco

        addresses = []
        for name in self.spec.joints:
            j = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, self.prefix + name)
            if j < 0:
                raise ConfigError(f"{self.spec.path or self.spec.name}: joints: {self.prefix + name!r} is not a "
                                  "joint of the shielded environment's MuJoCo model")
            addresses.append(model.jnt_qposadr[j])
        return np.array(addresses)


# a task's action convention -> the hardware control mode whose commands those actions are
CONTROL_MODE_OF = {"absolute": "joint_position", "delta": "ee_delta"}


def check_hardware_fits_task(spec: HardwareSpec, task: TaskSpec) -> None:
    """The hardware's commands must be the task's actions: its scene (``task``), its control mode and its command
    size; errors name the hardware file, the key and the expected value."""
    where = spec.path or spec.name
    if spec.task and spec.task != task.name:
        raise ConfigError(f"{where}: task: expected {task.name!r} (the task being shielded) or none, "
                          f"got {spec.task!r}")
    mode = CONTROL_MODE_OF.get(task.action.convention)
    if spec.control_mode != mode:
        raise ConfigError(f"{where}: control_mode: expected {mode!r} (task {task.name}'s actions are "
                          f"{task.action.convention}), got {spec.control_mode!r}")
    if spec.command_dim != task.action.dim:
        key = "joints" if spec.control_mode != "ee_delta" else "gripper"
        raise ConfigError(f"{where}: {key}: expected commands of {task.action.dim} values (task {task.name}'s "
                          f"action.dim), got {spec.command_dim} ({spec.n_joints} joints"
                          f"{' and a gripper' if spec.gripper else ''}, control_mode {spec.control_mode!r})")


@dataclass(frozen=True)
class EnvShield:
    """How :func:`robopolicy.sim.make_env` shields each env: the hardware file (an absolute path), the shield's
    options and CaT. Picklable, so async and Ray workers build their own shield. Build it with :func:`env_shield`,
    which checks the file against the task first."""

    hardware: str
    options: ShieldOptions = field(default_factory=ShieldOptions)
    cat: bool = False
    cat_scale: float = 0.1
    cat_penalty: float = 0.0

    def wrap(self, env: gym.Env) -> ShieldedEnv:
        spec = load_hardware(self.hardware)
        return ShieldedEnv(env, build_shield(spec, self.options), ScenePosition(env, spec), self.cat, self.cat_scale,
                           self.cat_penalty)


def env_shield(hardware: str, task: TaskSpec, options: ShieldOptions | None = None, cat: bool = False,
               cat_scale: float = 0.1, cat_penalty: float = 0.0) -> EnvShield:
    """The :class:`EnvShield` for ``hardware`` (a name or TOML path) on ``task``: a missing file, a file that does
    not fit the task or bad shield options are a ConfigError here, before any env is built."""
    spec = load_hardware(hardware)
    check_hardware_fits_task(spec, task)
    if cat_scale <= 0:
        raise ConfigError(f"shield.cat_scale: expected > 0, got {cat_scale}")
    options = options or ShieldOptions()
    build_shield(spec, options)  # option errors now, not in every worker
    if not (np.isfinite(cat_penalty) and cat_penalty >= 0):
        raise ConfigError(f"shield.cat_penalty: expected finite and >= 0, got {cat_penalty}")
    return EnvShield(str(spec.path), options, cat, cat_scale, cat_penalty)


COUNT_KEYS = ("steps", "intervened")
ENV_COUNT_KEYS = ("cat_terminations", "faults")  # counted by a shielded env, not by a shield on a robot
GROUP_KEYS = ("by_stage", "fallbacks")


def sum_counts(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Add up intervention counts (each with ``steps``, ``intervened``, ``by_stage`` and ``fallbacks``, and
    ``cat_terminations`` and ``faults`` where an env counts them: those keys are in the sum where a part has
    them, so a robot's report does not claim 0 faults it never counted); ``rate``: the fraction of steps the
    shield corrected."""
    total = dict.fromkeys(COUNT_KEYS, 0)
    groups: dict[str, Counter] = {k: Counter() for k in GROUP_KEYS}
    for part in parts:
        for key in COUNT_KEYS:
            total[key] += part[key]
        for key in ENV_COUNT_KEYS:
            if key in part:
                total[key] = total.get(key, 0) + part[key]
        for key in GROUP_KEYS:
            groups[key].update(part[key])
    return {**total, "rate": total["intervened"] / max(total["steps"], 1), **{k: dict(v) for k, v in groups.items()}}


def pop_shield_counts(env: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A vector env's shielded sub-envs' counts since the last call, then cleared there: the summed totals of
    every step, and the finished episodes' counts (each with its ``env_seed``)."""
    parts = env.call("pop_shield_counts")
    return sum_counts(p["totals"] for p in parts), [e for p in parts for e in p["episodes"]]
