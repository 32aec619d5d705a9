"""The shield inside a gymnasium env: for arbitrary action sequences (NaN, inf, far out of range) the env's own
state never leaves the limits; CaT terminations follow the size of the correction; a measured violation (an env
that moves on its own) ends the episode."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from robopolicy.hal.shield.hardware import ShieldOptions, build_shield
from robopolicy.hal.shield_env import ShieldedEnv
from robopolicy.hal.spec import load_hardware

SPEC = load_hardware("panda_sim")
LOWER, UPPER = np.array(SPEC.limits.position_lower), np.array(SPEC.limits.position_upper)
VMAX = np.array(SPEC.limits.velocity)


class JointTargetEnv(gym.Env):
    """A perfectly tracking 7-joint arm: the action is the next joint position; ``drift`` is added every step
    (an env that moves by itself, to test the measured-state check)."""

    observation_space = gym.spaces.Dict({"joint_position": gym.spaces.Box(-np.inf, np.inf, (7,))})
    action_space = gym.spaces.Box(-np.inf, np.inf, (7,))

    def __init__(self, drift: float = 0.0) -> None:
        self.q = np.array(SPEC.home)
        self.drift = drift
        self.trajectory: list[np.ndarray] = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.q = np.array(SPEC.home)
        self.trajectory = [self.q.copy()]
        return {"joint_position": self.q.copy()}, {}

    def step(self, action):
        self.q = np.asarray(action, float) + self.drift
        self.trajectory.append(self.q.copy())
        return {"joint_position": self.q.copy()}, 0.0, False, False, {}


def shielded(cat: bool = False, drift: float = 0.0, cat_penalty: float = 0.0) -> ShieldedEnv:
    return ShieldedEnv(JointTargetEnv(drift), build_shield(SPEC, ShieldOptions.joint_only()), cat=cat,
                       cat_penalty=cat_penalty)


@settings(max_examples=40, deadline=None)
@given(st.lists(hnp.arrays(np.float64, 7, elements=st.one_of(st.floats(-10, 10), st.just(np.nan),
                                                              st.just(np.inf))), min_size=1, max_size=25))
def test_env_state_never_leaves_the_limits_whatever_the_actions(actions) -> None:
    env = shielded()
    env.reset(seed=0)
    for action in actions:
        _, _, terminated, _, info = env.step(action)
        assert not terminated and "shield_fault" not in info
    states = np.stack(env.unwrapped.trajectory)
    assert (states >= LOWER).all() and (states <= UPPER).all()
    assert (np.abs(np.diff(states, axis=0)) <= VMAX * SPEC.period_s + 1e-9).all()


def test_info_reports_interventions_per_step() -> None:
    env = shielded()
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array(SPEC.home))
    assert info["shield"] == {"intervened": False, "stages": [], "amount": 0.0, "fallback": None}
    _, _, _, _, info = env.step(np.array(SPEC.home) + 1.0)
    assert info["shield"]["intervened"] and "acceleration" in info["shield"]["stages"]
    assert env.shield.counts.steps == 2 and env.shield.counts.intervened == 1


def test_cat_terminates_in_proportion_to_the_correction() -> None:
    env = shielded(cat=True)
    env.reset(seed=0)
    home = np.array(SPEC.home)
    _, _, terminated, _, info = env.step(home)  # safe: no intervention, no termination
    assert not terminated and "cat_termination_prob" not in info
    _, _, terminated, _, info = env.step([np.nan] * 7)  # an action no shield can use: always terminates
    assert terminated and info["cat_termination_prob"] == 1.0
    env.reset(seed=1)
    small = home.copy()
    # just beyond one period's acceleration (15 rad/s^2 less the file's rate margin, for 0.05 s): 1 mrad too far
    small[0] += SPEC.limits.acceleration[0] * (1 - SPEC.shield.rate_margin) * SPEC.period_s ** 2 + 0.001
    _, _, _, _, info = env.step(small)
    assert 0.0 < info["cat_termination_prob"] < 0.05


def test_the_cat_penalty_lowers_only_the_reward_of_the_step_cat_ends() -> None:
    env = shielded(cat=True, cat_penalty=7.5)
    env.reset(seed=0)
    home = np.array(SPEC.home)
    assert env.step(home)[1] == 0.0  # no intervention: the env's own reward
    _, reward, terminated, _, _ = env.step([np.nan] * 7)  # CaT ends the episode here
    assert terminated and reward == -7.5
    with pytest.raises(ValueError, match="cat_penalty"):
        shielded(cat=True, cat_penalty=float("nan"))


def test_a_measured_violation_ends_the_episode() -> None:
    env = shielded(drift=0.2)  # the env pushes every joint 0.2 rad further each step
    env.reset(seed=0)
    for _ in range(100):
        _, _, terminated, _, info = env.step(np.array(SPEC.home) + 3.0)
        if terminated:
            break
    assert terminated and "hard limits" in info["shield_fault"]
    with pytest.raises(ValueError, match="cat_scale"):
        ShieldedEnv(JointTargetEnv(), env.shield, cat_scale=0.0)
