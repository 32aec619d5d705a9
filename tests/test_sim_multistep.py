"""The multistep wrapper executes exactly n_action_steps actions and stacks the right history."""

import gymnasium as gym
import numpy as np
import pytest

from robopolicy.sim import make_vector_env
from robopolicy.sim.wrappers import MultiStepWrapper


class Counter(gym.Env):
    """Observation is the number of steps taken; it records every action it receives."""

    def __init__(self, end_at: int = 100, success_at: int = -1):
        self.observation_space = gym.spaces.Dict({"t": gym.spaces.Box(0, 1000, (1,), np.float32)})
        self.action_space = gym.spaces.Box(-10, 10, (2,), np.float32)
        self.end_at, self.success_at = end_at, success_at
        self.actions = []

    def _obs(self):
        return {"t": np.array([len(self.actions)], np.float32)}

    def reset(self, *, seed=None, options=None):
        self.actions = []
        return self._obs(), {}

    def step(self, action):
        self.actions.append(np.array(action))
        t = len(self.actions)
        return self._obs(), 1.0, t >= self.end_at, False, {"is_success": t == self.success_at}


def test_executes_exactly_n_action_steps_in_order_and_stacks_history():
    inner = Counter()
    env = MultiStepWrapper(inner, n_obs_steps=3, n_action_steps=4)
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs["t"][:, 0], [0, 0, 0])  # padded with the first observation
    chunk = np.arange(8, dtype=np.float32).reshape(4, 2)
    obs, reward, terminated, truncated, info = env.step(chunk)
    assert len(inner.actions) == 4 and info["n_steps"] == 4 and reward == 4.0
    np.testing.assert_array_equal(np.stack(inner.actions), chunk)
    np.testing.assert_array_equal(obs["t"][:, 0], [2, 3, 4])  # oldest first, newest last
    obs, *_ = env.step(chunk)
    assert len(inner.actions) == 8
    np.testing.assert_array_equal(obs["t"][:, 0], [6, 7, 8])
    assert env.observation_space["t"].shape == (3, 1) and env.action_space.shape == (4, 2)


def test_stops_at_episode_end_and_reports_success_anywhere_in_the_chunk():
    inner = Counter(end_at=6, success_at=5)
    env = MultiStepWrapper(inner, n_obs_steps=2, n_action_steps=4)
    env.reset()
    _, _, terminated, _, info = env.step(np.zeros((4, 2)))
    assert not terminated and not info["is_success"]
    _, reward, terminated, _, info = env.step(np.zeros((4, 2)))
    assert terminated and info["n_steps"] == 2 and reward == 2.0 and len(inner.actions) == 6
    assert info["is_success"]  # step 5 succeeded although step 6 did not


def test_rejects_a_chunk_of_the_wrong_length():
    env = MultiStepWrapper(Counter(), n_obs_steps=1, n_action_steps=4)
    env.reset()
    with pytest.raises(ValueError, match="action chunk"):
        env.step(np.zeros((3, 2)))


@pytest.mark.parametrize("asynchronous", [False, True])
def test_vector_env_of_chunked_envs(asynchronous):
    env = make_vector_env("push_puck", 2, asynchronous=asynchronous, n_obs_steps=2, n_action_steps=5)
    obs, _ = env.reset(seed=[1, 2])
    assert obs["state"].shape == (2, 2, 6)
    np.testing.assert_array_equal(obs["state"][:, 0], obs["state"][:, 1])  # history padded with the first obs
    assert not np.array_equal(obs["state"][0], obs["state"][1])  # each sub-env got its own seed
    obs2, reward, terminated, truncated, info = env.step(np.zeros((2, 5, 2), np.float32))
    np.testing.assert_array_equal(info["n_steps"], [5, 5])
    assert obs2["state"].shape == (2, 2, 6) and reward.shape == (2,)
    assert not np.array_equal(obs2["state"][:, 0], obs2["state"][:, 1])  # oldest and newest of the chunk differ
    env.close()
