"""Ray vector-env backend: the same transitions, infos and autoreset as the local vector env, on a local 2-CPU Ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'robopolicy[dist]')")

from robopolicy.sim import make_vector_env  # noqa: E402
from robopolicy.sim.ray_vector import RayVectorEnv  # noqa: E402

N_ENVS = 3  # split 2 + 1 over two workers: groups of unequal size


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def assert_same(a, b, path="") -> None:
    """Deep equality of observations / vector infos (dicts, object arrays of dicts, arrays)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, np.ndarray) and a.dtype == object:
        assert isinstance(b, np.ndarray) and a.shape == b.shape, path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif a is None:
        assert b is None, path
    else:
        assert np.asarray(a).dtype == np.asarray(b).dtype, f"{path}: {np.asarray(a).dtype} != {np.asarray(b).dtype}"
        np.testing.assert_array_equal(a, b, err_msg=path)


@pytest.mark.parametrize("same_step", [False, True], ids=["next-step-autoreset", "same-step-autoreset"])
def test_ray_env_matches_local_across_episode_ends(local_ray, same_step: bool) -> None:
    # push_puck truncates after 200 steps = 25 chunks of 8: 30 chunks cross one autoreset; with same-step
    # autoreset the final observations and infos come in info["final_obs"] / info["final_info"]
    ray_env = make_vector_env("push_puck", N_ENVS, backend="ray", ray_workers=2, same_step_autoreset=same_step)
    local_env = make_vector_env("push_puck", N_ENVS, same_step_autoreset=same_step)
    try:
        assert ray_env.metadata["ray_workers"] == 2
        assert ray_env.metadata["autoreset_mode"] == local_env.metadata["autoreset_mode"]
        assert ray_env.observation_space == local_env.observation_space
        assert ray_env.action_space == local_env.action_space
        for got, want in zip(ray_env.reset(seed=7), local_env.reset(seed=7)):
            assert_same(got, want)
        rng = np.random.default_rng(0)
        episode_ends = 0
        for _ in range(30):
            actions = rng.uniform(-0.25, 0.25, size=local_env.action_space.shape).astype(np.float32)
            got, want = ray_env.step(actions), local_env.step(actions)
            for name, x, y in zip(("obs", "reward", "terminated", "truncated", "info"), got, want):
                assert_same(x, y, name)
            episode_ends += int(np.sum(got[2] | got[3]))
            if same_step and got[3].any():
                assert got[4]["_final_obs"].tolist() == got[3].tolist()
        assert episode_ends == N_ENVS  # every env ended (and was reset) once, as locally
        assert ray_env.call("n_obs_steps") == local_env.call("n_obs_steps")
    finally:
        ray_env.close()
        local_env.close()


def test_partial_reset_and_bad_actions(local_ray) -> None:
    env = RayVectorEnv(make_vector_env, "push_puck", N_ENVS, num_workers=2)
    try:
        obs, _ = env.reset(seed=0)
        env.step(np.zeros(env.action_space.shape, np.float32))
        mask = np.array([False, False, True])  # only the second worker's env
        after, info = env.reset(seed=[None, None, 2], options={"reset_mask": mask})
        np.testing.assert_array_equal(after["state"][2], obs["state"][2])  # same seed, same initial state
        assert not np.array_equal(after["state"][0], obs["state"][0])  # the others kept their stepped state
        np.testing.assert_array_equal(info["_is_success"], mask)
        with pytest.raises(ValueError, match="expected 3 rows"):
            env.step(np.zeros((2, *env.single_action_space.shape), np.float32))
    finally:
        env.close()


def test_finetuning_on_ray_rollouts_matches_local_rollouts(local_ray, tmp_path) -> None:
    """The whole fine-tuning iteration (rollouts, GAE, PPO update) is the same with the envs in Ray actors."""
    from robopolicy.rl.finetune import TIMING_COLUMNS, finetune
    from robopolicy.train.runlog import read_log
    from tests.test_rl_finetune import tiny_config, tiny_policy

    checkpoint = str(tiny_policy().save(tmp_path / "bc"))
    runs = {backend: finetune(tiny_config(tmp_path / backend, iterations=1, **{"rollout.vector_backend": backend,
                                                                             "rollout.ray_workers": 2}), checkpoint)
            for backend in ("local", "ray")}
    rows = {backend: read_log(run.out_dir / "log.csv") for backend, run in runs.items()}
    assert rows["ray"][-1]["env_steps"] > 0
    assert [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows["ray"]] == \
        [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows["local"]]
    for (name, x), (_, y) in zip(runs["local"].policy.state_dict().items(), runs["ray"].policy.state_dict().items()):
        assert torch.equal(x, y), name
