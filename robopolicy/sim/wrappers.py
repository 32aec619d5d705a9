"""Gymnasium wrappers that make every task look the same to policies, collectors and evaluation."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from robopolicy.chunking import FrameHistory, stack_frames
from robopolicy.task import SuccessRule


class DictObservation(gym.ObservationWrapper):
    """Expose a flat-array observation as ``{key: obs}`` so all tasks share the dict interface."""

    def __init__(self, env: gym.Env, key: str = "state") -> None:
        super().__init__(env)
        self.key = key
        self.observation_space = gym.spaces.Dict({key: env.observation_space})

    def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        return {self.key: np.asarray(observation, dtype=np.float32)}


class SuccessInfo(gym.Wrapper):
    """Write the task's success rule into ``info['is_success']`` at every reset and step."""

    def __init__(self, env: gym.Env, rule: SuccessRule) -> None:
        super().__init__(env)
        self.rule = rule

    def _success(self, info: dict[str, Any]) -> bool:
        if self.rule.key not in info:
            return False
        if self.rule.type == "info_threshold":
            return bool(float(info[self.rule.key]) >= self.rule.min)
        return bool(info[self.rule.key])

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, dict(info, is_success=self._success(info))

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, dict(info, is_success=self._success(info))


def _stacked(space: gym.spaces.Box, n: int) -> gym.spaces.Box:
    low = np.broadcast_to(space.low, (n, *space.shape))
    high = np.broadcast_to(space.high, (n, *space.shape))
    return gym.spaces.Box(low, high, dtype=space.dtype)


class MultiStepWrapper(gym.Wrapper):
    """Observation history in, action chunk out (diffusion_policy's multistep execution, made explicit).

    The env side of chunk execution (see `robopolicy.chunking`): batch-oriented loops hand over a whole chunk per
    call, so there is no action queue here, only the shared observation window.

    ``step`` takes ``(n_action_steps, *action_shape)`` actions and executes them in order, stopping early
    when the episode ends. It returns each observation key stacked over the last ``n_obs_steps`` steps
    (oldest first; padded with the first observation after reset), the summed reward, and the last
    step's info with ``is_success`` true if any executed step succeeded and ``n_steps`` executed.
    """

    def __init__(self, env: gym.Env, n_obs_steps: int, n_action_steps: int) -> None:
        super().__init__(env)
        if n_obs_steps < 1 or n_action_steps < 1:
            raise ValueError(f"n_obs_steps={n_obs_steps} and n_action_steps={n_action_steps} must be >= 1")
        self.n_obs_steps = n_obs_steps
        self.n_action_steps = n_action_steps
        self.observation_space = gym.spaces.Dict(
            {k: _stacked(s, n_obs_steps) for k, s in env.observation_space.spaces.items()}
        )
        self.action_space = _stacked(env.action_space, n_action_steps)
        self._history: FrameHistory[dict[str, np.ndarray]] = FrameHistory(n_obs_steps)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._history.clear()
        self._history.push(obs)
        return stack_frames(self._history.frames), info

    def step(self, actions: np.ndarray):
        actions = np.asarray(actions)
        if actions.shape != self.action_space.shape:
            raise ValueError(f"expected an action chunk of shape {self.action_space.shape}, got {actions.shape}")
        total, success, terminated, truncated, info = 0.0, False, False, False, {}
        n_steps = 0
        for action in actions:
            obs, reward, terminated, truncated, info = self.env.step(action)
            self._history.push(obs)
            total += float(reward)
            success = success or bool(info.get("is_success", False))
            n_steps += 1
            if terminated or truncated:
                break
        info = dict(info, is_success=success, n_steps=n_steps)
        return stack_frames(self._history.frames), total, terminated, truncated, info
