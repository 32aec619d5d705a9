"""Scripted PushPuck expert: go around the puck (clockwise or counter-clockwise), then push it home.

It reads only the ``state`` observation (pusher, puck, goal), so it runs through the same evaluation
path as a learned policy. The side it goes around is drawn per episode, which makes the demonstrations
multimodal.
"""

from __future__ import annotations

import numpy as np

from robopolicy.sim.push_puck import PUCK_RADIUS, PUSHER_RADIUS

CONTACT = PUCK_RADIUS + PUSHER_RADIUS


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


class PushPuckExpert:
    """Waypoint controller with a noise knob: ``noise`` is the std of Gaussian action noise (metres) and
    ``pause_prob`` the chance of holding still for a step, stand-ins for less proficient demonstrators."""

    def __init__(
        self, noise: float = 0.0, pause_prob: float = 0.0, max_step: float = 0.02, seed: int | None = None
    ) -> None:
        self.noise = noise
        self.pause_prob = pause_prob
        self.max_step = max_step
        self.rng = np.random.default_rng(seed)
        self.side = 1.0

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.side = float(self.rng.choice([-1.0, 1.0]))

    def _orbit(self, pusher: np.ndarray, puck: np.ndarray, to_goal: np.ndarray) -> np.ndarray:
        """Next waypoint on a circle around the puck, stepping towards the pre-push angle behind it.

        Far from the goal side the short way round is taken; when the pusher is nearly opposite, the
        episode's drawn ``side`` decides, which is where the two modes come from."""
        rel = pusher - puck
        angle = np.arctan2(rel[1], rel[0])
        wanted = np.arctan2(-to_goal[1], -to_goal[0])
        diff = (wanted - angle + np.pi) % (2 * np.pi) - np.pi
        if abs(diff) < 0.3:
            return puck - to_goal * (CONTACT + 0.01)
        direction = np.sign(diff) if abs(diff) < 2.2 else self.side
        angle += direction * min(abs(diff), 0.6)
        return puck + (CONTACT + 0.03) * np.array([np.cos(angle), np.sin(angle)])

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        state = np.asarray(obs["state"], dtype=np.float64)
        pusher, puck, goal = state[0:2], state[2:4], state[4:6]
        to_goal = _unit(goal - puck)
        rel = pusher - puck
        behind = float(np.dot(_unit(rel), -to_goal))  # 1 when exactly behind the puck
        if behind > 0.95 and np.linalg.norm(rel) < CONTACT + 0.02:
            # push: aim a little into the puck along the line to the goal; ease off near the goal
            depth = min(0.02, float(np.linalg.norm(goal - puck)))
            target = puck - to_goal * (CONTACT - depth)
        else:
            target = self._orbit(pusher, puck, to_goal)
        step = target - pusher
        step *= min(1.0, self.max_step / max(float(np.linalg.norm(step)), 1e-9))
        if self.pause_prob > 0 and self.rng.random() < self.pause_prob:
            step = np.zeros(2)
        action = pusher + step
        if self.noise > 0:
            action += self.rng.normal(0.0, self.noise, 2)
        return action.astype(np.float32)
