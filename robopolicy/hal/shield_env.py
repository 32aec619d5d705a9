"""The shield inside a training or evaluation environment, so a policy learns and is judged under the constraints
it will be deployed with (the same :class:`~robopolicy.hal.shield.Shield` that guards the robot).

:class:`ShieldedEnv` wraps a single-step gymnasium env whose actions are the robot's commands: every action is
shielded before the env sees it; the measured joint positions (read from the observation) are checked against
the hard limits after every step, a violation ending the episode (``terminated``, ``info["shield_fault"]``).
``info["shield"]`` says per step whether and how much the shield intervened.

CaT (constraints as terminations, Chane-Sane et al. 2024) is optional: a step whose raw action the shield had to
correct ends the episode with probability ``min(1, amount / cat_scale)`` (1 for a non-finite action), so the
policy gradient sees constraint violations as lost future reward instead of silently corrected actions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from robopolicy.hal.shield.pipeline import Shield, ShieldFault, ShieldStep

PositionFn = Callable[[Any], np.ndarray]


def _position_reader(position: str | PositionFn) -> PositionFn:
    if callable(position):
        return position
    return lambda obs: np.asarray(obs[position], dtype=float)


class ShieldedEnv(gym.Wrapper):
    """``position``: the observation key holding the measured joint positions, or a function of the observation."""

    def __init__(self, env: gym.Env, shield: Shield, position: str | PositionFn = "joint_position",
                 cat: bool = False, cat_scale: float = 0.1) -> None:
        super().__init__(env)
        if cat_scale <= 0:
            raise ValueError(f"cat_scale must be > 0, got {cat_scale}")
        self.shield, self.cat, self.cat_scale = shield, cat, float(cat_scale)
        self._position = _position_reader(position)

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self.shield.reset(self._position(obs))  # a start outside the hard limits is a ShieldFault: a broken env
        return obs, info

    def step(self, action):
        step = self.shield(action)
        obs, reward, terminated, truncated, info = self.env.step(step.command)
        info = dict(info, shield=self._step_info(step))
        try:
            self.shield.check_measured(self._position(obs))
        except ShieldFault as exc:
            terminated, info["shield_fault"] = True, str(exc)
        if self.cat and step.intervened:
            p = self.termination_probability(step)
            info["cat_termination_prob"] = p
            terminated = terminated or bool(self.np_random.random() < p)
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
