"""The one episode count every rollout loop uses (robopolicy.episodes): a vector-env call read under either
autoreset mode, for chunked and single-step sub-envs, and the per-env return/length/success tally."""

import gymnasium as gym
import numpy as np
import pytest

from robopolicy.episodes import EpisodeTally, Finished, step_vector_env
from robopolicy.sim.wrappers import MultiStepWrapper

SAME, NEXT = gym.vector.AutoresetMode.SAME_STEP, gym.vector.AutoresetMode.NEXT_STEP


class CountingEnv(gym.Env):
    """Reward 1 per step, 5-step episodes (terminated), success at step 3 only, observation = step count."""

    observation_space = gym.spaces.Dict({"state": gym.spaces.Box(0, 10, (1,), np.float32)})
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return {"state": np.zeros(1, np.float32)}, {"is_success": False}

    def step(self, action):
        self.t += 1
        return {"state": np.full(1, self.t, np.float32)}, 1.0, self.t == 5, False, {"is_success": self.t == 3}


def vector(mode, chunk: int | None = 4, n: int = 2):
    make = (lambda: MultiStepWrapper(CountingEnv(), 1, chunk)) if chunk else CountingEnv
    return gym.vector.SyncVectorEnv([make] * n, autoreset_mode=mode)


def run(env, calls: int, chunked: bool = True):
    env.reset(seed=[0] * env.num_envs)
    actions = np.zeros((env.num_envs, *env.single_action_space.shape), np.float32)
    return [step_vector_env(env, actions, chunked) for _ in range(calls)]


def test_same_step_autoreset_chunks_read_as_executed_with_the_true_final_observation():
    steps = run(vector(SAME), 3)
    assert [s.n_steps[0] for s in steps] == [4, 1, 4]  # the chunk that ended the episode ran 1 step
    assert [s.reward[0] for s in steps] == [4.0, 1.0, 4.0]
    assert [s.success[0] for s in steps] == [True, False, True]  # any executed step (step 3 is in chunk 1)
    assert steps[1].terminated.all() and steps[1].after["state"][0, -1, 0] == 5  # true final observation
    assert steps[1].obs["state"][0, -1, 0] == 0  # the next decision starts from the reset observation


def test_next_step_autoreset_reset_call_executes_nothing():
    steps = run(vector(NEXT), 3)
    assert [s.n_steps[0] for s in steps] == [4, 1, 0] and steps[2].reward[0] == 0
    assert steps[1].after["state"][0, -1, 0] == 5


def test_single_step_envs_count_one_step_per_call_and_need_same_step_autoreset():
    steps = run(vector(SAME, chunk=None), 6, chunked=False)
    assert all((s.n_steps == 1).all() for s in steps)
    assert steps[4].done.all() and steps[4].after["state"][0, 0] == 5 and steps[4].obs["state"][0, 0] == 0
    with pytest.raises(ValueError, match="same-step autoreset"):
        run(vector(NEXT, chunk=None), 1, chunked=False)


def test_tally_counts_every_step_that_ran_and_restarts_each_episode():
    env, tally = vector(SAME, chunk=None), EpisodeTally(2)
    finished = [f for s in run(env, 12, chunked=False) for f in tally.add(s.reward, s.n_steps, s.success, s.done)]
    assert finished == [Finished(0, 5.0, 5, True), Finished(1, 5.0, 5, True)] * 2  # in env order per call
    assert tally.length.tolist() == [2, 2] and not tally.success.any()  # the third episode, 2 steps in


def test_tally_ignores_envs_outside_live():
    tally = EpisodeTally(3)
    live = np.array([True, True, False])
    assert tally.add([1.0, 2.0, 3.0], [1, 1, 1], [False, True, True], [False, True, True], live) == \
        [Finished(1, 2.0, 1, True)]
    assert tally.ret.tolist() == [1.0, 0.0, 0.0] and tally.length.tolist() == [1, 0, 0]
