"""Every task file loads; every fast task builds, steps, renders and resets deterministically."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robopolicy.sim import make_env
from robopolicy.specs import ConfigError, RunConfig, from_dict
from robopolicy.task import list_tasks, load_task

FAST = [name for name in list_tasks() if load_task(name).fast]


def test_task_files_are_complete():
    names = list_tasks()
    for required in ("hopper", "walker2d", "halfcheetah", "reacher", "pusher", "lift", "lift_image", "can",
                     "can_image", "square", "square_image", "push_puck", "push_puck_image"):
        assert required in names
    for name in names:
        task = load_task(name)
        assert task.max_episode_steps > 0 and task.reward and task.action_description
        assert len(task.action.low) == task.action.dim
        config = from_dict(RunConfig, task.run_config_dict())  # the default recipe is a valid run config
        assert [o.key for o in config.policy.obs] == task.obs_keys
        assert config.policy.n_action_steps == task.horizons.n_action_steps


def test_bad_horizons_name_the_file_and_field(tmp_path: Path) -> None:
    text = (Path(__file__).parents[1] / "tasks" / "push_puck.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("n_action_steps = 8", "n_action_steps = 17"))
    with pytest.raises(ConfigError, match=r"bad\.toml: .*horizons\.n_action_steps: expected between 1 and horizon=16"):
        load_task(bad)
    bad.write_text("name = ")
    with pytest.raises(ConfigError, match=r"bad\.toml: invalid TOML"):
        load_task(bad)
    with pytest.raises(ConfigError, match=r"task 'nope': no such file .*nope\.toml \(known: .*push_puck"):
        load_task("nope")


def test_task_recipes_load_without_a_simulator() -> None:
    """The trainer builds a run config from a task file; that must not import MuJoCo, robosuite or gymnasium."""
    code = ("import sys; from robopolicy.train.cli import load_config; load_config('task:lift', []); "
            "print(sorted(m for m in ('mujoco', 'robosuite', 'gymnasium', 'robopolicy.sim') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _rollout(env, seed, n=15):
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    trace = [obs]
    for _ in range(n):
        obs, *_ = env.step(env.action_space.sample())
        trace.append(obs)
    return trace


@pytest.mark.parametrize("name", FAST)
def test_fast_task_steps_renders_and_resets_deterministically(name):
    task = load_task(name)
    env = make_env(task, chunked=False)
    try:
        first, second = _rollout(env, 7), _rollout(env, 7)
        other = _rollout(env, 8)
        for a, b in zip(first, second):
            assert set(task.obs_keys) <= set(a)  # every task key is present
            for key in task.obs_keys:
                assert a[key].shape == next(o.shape for o in task.obs if o.key == key)
                np.testing.assert_array_equal(a[key], b[key])
        assert any(not np.array_equal(a[task.obs_keys[0]], b[task.obs_keys[0]]) for a, b in zip(first, other))
        frame = env.render()
        assert frame.dtype == np.uint8 and frame.shape == (task.video.height, task.video.width, 3)
        assert frame.std() > 0
    finally:
        env.close()


def test_image_observation_is_rendered_fast_and_shows_the_scene():
    env = make_env("push_puck_image", chunked=False)
    obs, _ = env.reset(seed=0)
    image = obs["image"]
    assert image.shape == (84, 84, 3) and image.dtype == np.uint8 and image.std() > 5
    obs2, *_ = env.step(np.array([0.2, 0.2], np.float32))
    assert not np.array_equal(obs2["image"], image)  # the pusher moved
    env.close()


@pytest.mark.slow
@pytest.mark.robosuite
def test_robosuite_lift_builds_steps_and_resets_deterministically():
    env = make_env("lift", chunked=False)
    try:
        a, b = _rollout(env, 3, n=5), _rollout(env, 3, n=5)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x["object"], y["object"], atol=1e-6)
        assert env.render().shape == (256, 256, 3)
    finally:
        env.close()
