"""`robopolicy data regenerate`: observations rebuilt from recorded simulator states, compared with stored ones."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from robopolicy.data.replay_buffer import ReplayBuffer
from robopolicy.sim.collect import Recipe, collect
from robopolicy.sim.state_obs import StateObserver, parse_camera
from robopolicy.task import load_task
from tests.data_tools import convert_fails, require_robosuite_141, robosuite_demo, run_cli, run_tool


@pytest.fixture(scope="module")
def push_puck(tmp_path_factory):
    """Our own collected demos: observations recorded live, with the simulator state at each of them."""
    out = tmp_path_factory.mktemp("pp") / "pp.zarr"
    collect(Recipe(name="t", task="push_puck", output=str(out), n_episodes=3, expert="push_puck",
                   expert_kwargs={"noise": 0.0}))
    return out


def test_replayed_states_reproduce_live_observations_and_add_cameras(tmp_path, push_puck, capsys):
    dst = tmp_path / "re.zarr"
    assert run_cli("data", "regenerate", str(push_puck), str(dst), "--task", "push_puck",
                   "--cameras", "top:48x64", "--no-progress", "--strict") == 0
    assert "all within tolerance" in capsys.readouterr().out
    src, out = ReplayBuffer.open(push_puck), ReplayBuffer.open(dst)
    assert "states" in src.keys and out.keys == ["action", "reward", "state", "states", "top_image"]
    np.testing.assert_array_equal(out.episode_ends, src.episode_ends)
    for key in ("action", "reward", "state", "states"):  # state: replayed, equal to the live one bit for bit
        np.testing.assert_array_equal(out.read(key), src.read(key))
    images = out.read("top_image")
    assert images.shape == (src.n_steps, 48, 64, 3) and images.dtype == np.uint8
    assert not np.array_equal(images[0], images[-1])  # the scene moves
    # Each frame is the render of its own step's state: a fresh observer set to that state draws the same picture.
    observer = StateObserver(load_task("push_puck"), [parse_camera("top:48x64")])
    try:
        states = src.read("states")
        for step in (0, int(src.episode_ends[0]), src.n_steps - 1):  # first steps of episodes 0 and 1, the last one
            observer.start_episode()
            np.testing.assert_array_equal(images[step], observer.observe(states[step])["top_image"])
    finally:
        observer.close()
    comparison = out.attrs["source"]["regenerated"]["comparison"]
    assert comparison["agrees"] and comparison["keys"]["state"]["max_abs"] == 0.0
    assert set(out.attrs["obs"]) == {"state", "top_image"}


def test_mismatch_is_reported_and_strict_fails_cleanly(tmp_path, push_puck, capsys):
    drifted = tmp_path / "drifted.zarr"
    shutil.copytree(push_puck, drifted)
    store = ReplayBuffer.open(drifted, mode="a")
    state = store.array("state")
    sl = store.episode_slice(1)
    state[sl.start + 3] = state[sl.start + 3] + np.float32(0.01)  # what a simulator version drift looks like
    convert_fails(tmp_path, capsys, drifted, "state", "0.01", "episode 1 step 3", "expected within 1e-05",
                  command=("data", "regenerate"), extra=("--task", "push_puck", "--strict"))
    assert run_cli("data", "regenerate", str(drifted), str(tmp_path / "kept.zarr"), "--task", "push_puck",
                   "--no-progress") == 0
    text = capsys.readouterr().out
    assert "MISMATCH" in text
    # key, largest difference (float32 rounding of 0.01), steps over the tolerance out of all compared, where
    assert re.search(rf"state\s+0\.01\s+1/{store.n_steps}\s+episode 1 step 3", text), text
    report = ReplayBuffer.open(tmp_path / "kept.zarr").attrs["source"]["regenerated"]["comparison"]
    assert not report["agrees"] and report["keys"]["state"]["over_tolerance"] == 1
    assert report["keys"]["state"]["where"] == "episode 1 step 3"


def test_bad_input(tmp_path, push_puck, capsys):
    no_states = tmp_path / "no_states.zarr"
    src = ReplayBuffer.open(push_puck)
    store = ReplayBuffer.create(no_states)
    store.add_episode({k: src.get_episode(0)[k] for k in ("action", "state")})
    convert_fails(tmp_path, capsys, no_states, "states", "missing; expected recorded simulator states",
                  command=("data", "regenerate"), extra=("--task", "push_puck"))
    convert_fails(tmp_path, capsys, push_puck, "--cameras", "expected NAME:HxW",
                  command=("data", "regenerate"), extra=("--task", "push_puck", "--cameras", "top:48"))
    convert_fails(tmp_path, capsys, push_puck, "hopper", "cannot replay recorded states",
                  command=("data", "regenerate"), extra=("--task", "hopper"))


@pytest.mark.robosuite
def test_robosuite_versions_agree_on_state_derived_observations(tmp_path, capsys):
    """robosuite's own Lift demos (states only) replayed by robosuite 1.4.1 give the stored observations of a
    robomimic-style file; regenerating them with 1.5.2 reports where the two releases differ."""
    import h5py

    python = require_robosuite_141()
    demo = robosuite_demo("lift")
    keys = {"object-state": "object", "robot0_eef_pos": "robot0_eef_pos", "robot0_eef_quat": "robot0_eef_quat",
            "robot0_gripper_qpos": "robot0_gripper_qpos"}
    run_tool("replay_robosuite.py", str(demo), str(tmp_path / "old.npz"), *keys, python=python)
    old = np.load(tmp_path / "old.npz")
    src = tmp_path / "lift_141.hdf5"
    with h5py.File(demo, "r") as f, h5py.File(src, "w") as g:
        start = 0
        for k in (1, 2, 3):
            states = f[f"data/demo_{k}/states"][()]
            g[f"data/demo_{k}/states"], g[f"data/demo_{k}/actions"] = states, f[f"data/demo_{k}/actions"][()]
            for theirs, ours in keys.items():
                g[f"data/demo_{k}/obs/{ours}"] = old[theirs][start : start + len(states)]
            start += len(states)
        g["data"].attrs.update(dict(f["data"].attrs))
        g["data"].attrs["repository_version"] = str(old["robosuite"])
    dst = tmp_path / "lift.zarr"
    assert run_cli("data", "regenerate", str(src), str(dst), "--task", "lift", "--cameras", "agentview:48x64",
                   "--no-progress") == 0
    text = capsys.readouterr().out
    assert "recorded with robosuite 1.4.1" in text and "robosuite 1.5.2" in text and "MISMATCH" in text
    comparison = ReplayBuffer.open(dst).attrs["source"]["regenerated"]["comparison"]
    for key in ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"):  # agree to float32 rounding
        assert comparison["keys"][key]["over_tolerance"] == 0, comparison["keys"][key]
    assert comparison["keys"]["object"]["max_abs"] > 0.1  # the drift is real and reported
    out = ReplayBuffer.open(dst)
    new, stored = out.read("object").astype(np.float64), old["object-state"]
    np.testing.assert_allclose(new[:, :7], stored[:, :7], atol=1e-6)  # cube pose: the same in both releases
    np.testing.assert_allclose(new[:, 7:], -stored[:, 7:], atol=1e-6)  # gripper_to_cube_pos: its sign flipped
    states = out.read("states")
    # The cube's free joint is qpos[9:12] after the Panda's 7 arm and 2 finger joints; states are [time, qpos, qvel].
    np.testing.assert_allclose(new[:, :3], states[:, 10:13], atol=1e-6)
    assert out.read("agentview_image").shape == (1384, 48, 64, 3)
