"""A robot behind the Backend API, presented to the evaluation protocol (``robopolicy.eval.protocol``) as a
one-environment vector env: observation histories in, action chunks out, the same episodes and report as in
simulation. Only the backend differs.

Commands go through ``robot.send(action, t_target)``: the shield's :class:`~robopolicy.hal.shield.hardware.
ShieldedBackend` (joint commands, or end-effector deltas through the shield's ``EeDeltaShield``), the only path
to a backend's actuators.
Resetting needs a simulated scene (``reset_scene``); a real robot's resets are the operator's
(``robopolicy.eval.hardware``).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

import numpy as np

from robopolicy.hal.backend import Backend, Command, FaultError, HalError, Observation, State, clock
from robopolicy.hal.recorder import observation_arrays
from robopolicy.hal.shield.pipeline import ShieldFault


class Robot(Protocol):
    backend: Backend
    shield: Any  # the Shield or EeDeltaShield; its ``counts`` are the running episode's interventions

    def read(self) -> Observation: ...

    def send(self, action: np.ndarray, t_target: float | None = None) -> tuple[Any, Command]: ...


def _scene(backend: Backend):
    """The simulated scene behind ``backend`` (the backend itself or the one a readonly wrapper holds)."""
    scene = getattr(backend, "inner", backend)
    if not hasattr(scene, "reset_scene"):
        raise HalError(f"{backend.name} backend has no simulated scene to reset; on a robot, evaluate with an "
                       "operator (robopolicy eval --hardware)")
    return scene


class BackendVectorEnv:
    """``num_envs = 1``; observations under ``robopolicy.hal.recorder.observation_arrays``' keys (a task
    scene's own keys among them), batched and stacked over ``n_obs_steps``. A fault ends the episode as
    truncated, with ``info["fault"]``; the next reset recovers the simulated scene and arms again. Scenes
    without a time limit of their own (the bare robot) end after ``max_episode_steps``. Each finished
    episode's shield counts are kept for ``evaluate(..., shielded=True)``, through the same
    ``call("pop_shield_counts")`` as a shielded simulation's vector env."""

    num_envs = 1

    def __init__(self, robot: Robot, n_obs_steps: int, n_action_steps: int,
                 max_episode_steps: int | None = None) -> None:
        self.robot, self.backend = robot, robot.backend
        self.scene = _scene(robot.backend)
        self.n_obs_steps, self.n_action_steps = n_obs_steps, n_action_steps
        self.max_episode_steps = max_episode_steps
        self._t = 0
        self._history: deque[dict[str, np.ndarray]] = deque(maxlen=n_obs_steps)
        self.faults: list[str] = []
        self._seed: int | None = None
        self._finished: list[dict[str, Any]] = []

    def call(self, name: str) -> list[Any]:
        """gymnasium's ``VectorEnv.call`` for the one environment (``pop_shield_counts`` is what is called)."""
        return [getattr(self, name)()]

    def pop_shield_counts(self) -> dict[str, Any]:
        """The finished episodes' shield counts since the last call (each with its ``env_seed``), and their sum
        as ``totals`` (no autoreset here, so every counted step belongs to a finished episode); then cleared."""
        from robopolicy.hal.shield_env import sum_counts

        episodes, self._finished = self._finished, []
        return {"totals": sum_counts(episodes), "episodes": episodes}

    def _finish_episode(self, fault: bool) -> None:
        self._finished.append(dict(self.robot.shield.counts.to_dict(), faults=int(fault), env_seed=self._seed))

    def _stacked(self) -> dict[str, np.ndarray]:
        return {k: np.stack([h[k] for h in self._history])[None] for k in self._history[-1]}

    def reset(self, *, seed: list[int]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if self.backend.state is State.FAULTED:
            self.backend.recover()
        if self.backend.state is State.RUNNING:
            self.backend.hold()
        if self.backend.state is State.CONNECTED:
            self.backend.arm()
        self.scene.reset_scene(seed[0])
        self._seed = seed[0]
        start = getattr(self.robot, "start", None)  # the shield restarts from the measured state
        obs = start() if start is not None else self.robot.read()
        self._history.clear()
        self._history.extend([observation_arrays(obs)] * self.n_obs_steps)
        self._t = 0
        return self._stacked(), {"is_success": np.zeros(1, bool)}

    def step(self, actions: np.ndarray):
        actions = np.asarray(actions)
        if actions.shape[:2] != (1, self.n_action_steps):
            raise ValueError(f"expected actions of shape (1, {self.n_action_steps}, dim), got {actions.shape}")
        total, success, terminated, truncated, n_steps = 0.0, False, False, False, 0
        info: dict[str, Any] = {}
        for action in actions[0]:
            try:
                self.robot.send(action, clock())
                self._history.append(observation_arrays(self.robot.read()))
            except (FaultError, HalError, ShieldFault) as exc:  # the arm is held; the episode is over
                self.faults.append(str(exc))
                info["fault"] = str(exc)
                truncated = True
                break
            last = self.scene.last_step
            n_steps += 1
            self._t += 1
            total += last.reward
            success |= bool((last.info or {}).get("is_success", False))
            terminated = last.terminated
            truncated = last.truncated or (self.max_episode_steps is not None and self._t >= self.max_episode_steps)
            if terminated or truncated:
                break
        if terminated or truncated:
            self._finish_episode(fault="fault" in info)
        info.update(is_success=np.array([success]), n_steps=np.array([n_steps]))
        return (self._stacked(), np.array([total]), np.array([terminated]), np.array([truncated]), info)

    def close(self) -> None:
        self.backend.close()
