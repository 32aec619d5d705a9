"""Converters, checked value by value against inputs that the real third-party tools produced."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest

from robopolicy.data.convert import convert
from robopolicy.data.replay_buffer import ReplayBuffer
from tests.data_tools import REPO, require_tools, robosuite_demo, run_cli, run_tool


def test_robosuite_demo_to_zarr_and_back_to_robomimic(tmp_path, capsys):
    src = robosuite_demo("lift")
    assert run_cli("convert", str(src), str(tmp_path / "lift.zarr"), "--no-progress") == 0
    out = capsys.readouterr().out
    assert "episodes  3" in out and "frames    1384" in out
    rb = ReplayBuffer.open(tmp_path / "lift.zarr")
    with h5py.File(src, "r") as f:
        names = sorted(f["data"], key=lambda n: int(n[5:]))  # demo_1..3, ordered by integer suffix
        for i, name in enumerate(names):
            ep = rb.get_episode(i)
            np.testing.assert_array_equal(ep["action"], f[f"data/{name}/actions"][()])
            np.testing.assert_array_equal(ep["states"], f[f"data/{name}/states"][()])
        env_info = f["data"].attrs["env_info"]
    assert rb.attrs["source"]["env_info"] == __import__("json").loads(env_info)
    assert rb.attrs["action"]["convention"]["mode"] == "delta"  # OSC_POSE with control_delta
    assert rb.attrs["obs"]["states"]["kind"] == "low_dim"

    assert run_cli("convert", str(tmp_path / "lift.zarr"), str(tmp_path / "lift.hdf5"), "--no-progress") == 0
    back = tmp_path / "back.zarr"
    convert(tmp_path / "lift.hdf5", back, progress=False)
    rb2 = ReplayBuffer.open(back)
    np.testing.assert_array_equal(rb2.episode_ends, rb.episode_ends)
    for key in rb.keys:
        np.testing.assert_array_equal(rb2.read(key), rb.read(key))


def test_robosuite_two_arm_demo_keeps_per_step_extras(tmp_path):
    src = robosuite_demo("handover/panda_panda/demo.hdf5")
    _, out = convert(src, tmp_path / "h.zarr.zip", progress=False)
    rb = ReplayBuffer.open(tmp_path / "h.zarr.zip")
    assert out.n_episodes == 7 and rb.attrs["fps"] == 20
    with h5py.File(src, "r") as f:
        names = sorted(f["data"], key=lambda n: int(n[5:]))
        last = rb.get_episode(6)
        np.testing.assert_array_equal(last["action"], f[f"data/{names[6]}/actions"][()])
        np.testing.assert_array_equal(last["interventions"], f[f"data/{names[6]}/interventions"][()])
        assert "env_args" in rb.attrs["source"]


def _robomimic_file(path, with_mask: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """robomimic's processed layout (obs/, rewards, dones, action_dict, mask/) for the options robosuite files lack."""
    rng = np.random.default_rng(0)
    demos = {}
    with h5py.File(path, "w") as f:
        for k in (0, 2, 10, 1):  # written out of order: conversion must sort by the integer suffix
            n = 3 + k % 4
            demo = {"actions": rng.standard_normal((n, 7)), "rewards": rng.random(n), "dones": np.eye(n)[-1],
                    "obs/eef": rng.standard_normal((n, 3)),
                    "obs/cam": rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8),
                    "action_dict/abs_pos": rng.standard_normal((n, 3))}
            for key, arr in demo.items():
                f.create_dataset(f"data/demo_{k}/{key}", data=arr)
            demos[f"demo_{k}"] = demo
        f["data"].attrs["env_args"] = '{"env_name": "Lift", "type": 1, "env_kwargs": {"control_freq": 20}}'
        if with_mask:
            f.create_dataset("mask/valid", data=np.array([b"demo_10", b"demo_2"]))
    return demos


def test_robomimic_processed_filter_key_and_action_dict(tmp_path):
    src = tmp_path / "rm.hdf5"
    demos = _robomimic_file(src)
    convert(src, tmp_path / "all.zarr", progress=False)
    rb = ReplayBuffer.open(tmp_path / "all.zarr")
    order = ["demo_0", "demo_1", "demo_2", "demo_10"]
    np.testing.assert_array_equal(rb.episode_ends, np.cumsum([len(demos[d]["actions"]) for d in order]))
    np.testing.assert_array_equal(rb.get_episode(3)["cam"], demos["demo_10"]["obs/cam"])
    np.testing.assert_array_equal(rb.get_episode(1)["action_dict.abs_pos"], demos["demo_1"]["action_dict/abs_pos"])
    assert set(rb.attrs["obs"]) == {"cam", "eef"} and rb.attrs["obs"]["cam"]["kind"] == "rgb"
    assert rb.attrs["fps"] == 20

    assert run_cli("convert", str(src), str(tmp_path / "valid.zarr"), "--filter-key", "valid", "--no-progress") == 0
    valid = ReplayBuffer.open(tmp_path / "valid.zarr")
    assert valid.n_episodes == 2
    np.testing.assert_array_equal(valid.get_episode(0)["action"], demos["demo_2"]["actions"])
    np.testing.assert_array_equal(valid.get_episode(1)["reward"], demos["demo_10"]["rewards"])


@pytest.fixture(scope="module")
def lerobot_v3(tmp_path_factory):
    require_tools()
    out = tmp_path_factory.mktemp("lerobot_v3")
    run_tool("make_lerobot.py", str(out), "v3.0", "h264")
    return out


@pytest.fixture(scope="module")
def lerobot_v21(tmp_path_factory):
    require_tools()
    out = tmp_path_factory.mktemp("lerobot_v21")
    run_tool("make_lerobot.py", str(out), "v2.1")  # lerobot 0.3.3 encodes AV1 (libsvtav1)
    return out


def _check_lerobot_values(rb: ReplayBuffer, expected: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(rb.episode_ends, expected["episode_ends"])
    for key in ("action", "observation.state", "observation.images.wrist"):  # wrist: PNG, lossless
        np.testing.assert_array_equal(rb.read(key), expected[key])
    cam, want = rb.read("observation.images.cam").astype(int), expected["observation.images.cam"].astype(int)
    assert np.abs(cam - want).mean() < 4  # lossy video
    # Frame alignment: the blue channel steps by 20 per frame, far beyond codec error.
    np.testing.assert_allclose(cam[..., 2].mean(axis=(1, 2)), want[..., 2].mean(axis=(1, 2)), atol=6)


@pytest.mark.parametrize("which", ["v3", "v21"])
def test_lerobot_to_zarr(tmp_path, which, request):
    made = request.getfixturevalue("lerobot_v3" if which == "v3" else "lerobot_v21")
    src_summary, _ = convert(made / "dataset", tmp_path / "lr.zarr", progress=False)
    assert src_summary.format == ("lerobot v3.0" if which == "v3" else "lerobot v2.1")
    rb = ReplayBuffer.open(tmp_path / "lr.zarr")
    _check_lerobot_values(rb, dict(np.load(made / "expected.npz")))
    assert rb.attrs["fps"] == 10 and rb.attrs["obs"]["observation.images.cam"]["kind"] == "rgb"
    assert rb.attrs["action"]["names"] == ["vx", "vy"]


def test_zarr_to_lerobot_round_trip_read_by_lerobot(tmp_path, lerobot_v3):
    convert(lerobot_v3 / "dataset", tmp_path / "a.zarr", progress=False)
    a = ReplayBuffer.open(tmp_path / "a.zarr")
    # PNG images: exact round trip through our own reader.
    convert(tmp_path / "a.zarr", tmp_path / "png", dst_format="lerobot", options={"lerobot_images": "png"},
            progress=False)
    convert(tmp_path / "png", tmp_path / "b.zarr", progress=False)
    b = ReplayBuffer.open(tmp_path / "b.zarr")
    np.testing.assert_array_equal(b.episode_ends, a.episode_ends)
    for key in a.keys:
        np.testing.assert_array_equal(b.read(key), a.read(key))
    # H.264 video export, loaded by lerobot's own LeRobotDataset.
    convert(tmp_path / "a.zarr", tmp_path / "vid", dst_format="lerobot", progress=False)
    run_tool("read_lerobot.py", str(tmp_path / "vid"), str(tmp_path / "vid.npz"))
    got = np.load(tmp_path / "vid.npz")
    np.testing.assert_array_equal(got["episode_ends"], a.episode_ends)
    np.testing.assert_array_equal(got["action"], a.read("action"))
    np.testing.assert_array_equal(got["observation.state"], a.read("observation.state"))
    assert np.abs(got["observation.images.cam"].astype(int) - a.read("observation.images.cam")).mean() < 4


@pytest.fixture(scope="module")
def minari_sets(tmp_path_factory):
    require_tools()
    out = tmp_path_factory.mktemp("minari")
    run_tool("make_minari.py", str(out))
    return out


@pytest.mark.parametrize("storage", ["hdf5", "arrow"])
def test_minari_to_zarr_drops_final_observation(tmp_path, minari_sets, storage):
    src = minari_sets / storage / "robopolicy" / f"toy-{storage}-v0"
    convert(src, tmp_path / "m.zarr", progress=False)
    rb = ReplayBuffer.open(tmp_path / "m.zarr")
    ex = np.load(minari_sets / f"expected_{storage}.npz")
    n = ex["n_actions"]
    np.testing.assert_array_equal(rb.episode_ends, np.cumsum(n))
    # Observations hold T+1 rows per episode; row t pairs with action t, the last row is dropped.
    starts = np.concatenate([[0], np.cumsum(n + 1)[:-1]])
    first_rows = np.concatenate([np.arange(k) + start for k, start in zip(n, starts)])
    np.testing.assert_array_equal(rb.read("observation.state"), ex["obs_state"][first_rows])
    assert np.abs(rb.read("observation.image").astype(int) - ex["obs_image"][first_rows]).max() <= 3  # JPEG
    for key in ("action", "reward", "terminated", "truncated"):
        np.testing.assert_array_equal(rb.read(key), ex[key])
    assert "dropped" in rb.attrs["source"]["final_observation"]


def test_inspect_prints_the_same_summary_for_every_format(tmp_path, capsys):
    src = robosuite_demo("lift")
    assert run_cli("data", "inspect", str(src)) == 0
    text = capsys.readouterr().out
    assert "robosuite demo hdf5" in text and "episodes  3" in text and "states  (32,)" in text
    convert(src, tmp_path / "l.zarr", progress=False)
    assert run_cli("data", "inspect", str(tmp_path / "l.zarr")) == 0
    assert "frames    1384" in capsys.readouterr().out
    assert run_cli("data", "stats", str(tmp_path / "l.zarr")) == 0
    assert '"states"' in capsys.readouterr().out


def test_help_lists_formats():
    import argparse

    from robopolicy.data.cli import register

    parser = argparse.ArgumentParser(prog="robopolicy")
    sub = parser.add_subparsers()
    register(sub)
    text = sub.choices["convert"].format_help()
    for name in ("zarr", "robomimic", "lerobot", "minari"):
        assert name in text
    assert (REPO / "scripts" / "install_test_tools.sh").exists()


def _camera_store(path, lengths=(9, 12, 7, 10, 8, 11, 9, 6, 10, 8)):
    """Smooth camera frames (lossy video keeps them within a few grey levels) and random low-dim data."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:32, 0:48]
    rb = ReplayBuffer.create(path, attrs={"fps": 10.0})
    for e, n in enumerate(lengths):
        cam = np.stack([np.stack([xx * 4 + t * 3, yy * 6 + e * 20, np.full_like(xx, 40 + 20 * t)], -1)
                        for t in range(n)]).astype(np.uint8)
        rb.add_episode({"action": rng.standard_normal((n, 2)).astype(np.float32),
                        "state": (rng.standard_normal((n, 3)) * 0.01 + 1e3).astype(np.float32), "cam": cam})
    return rb


def test_lerobot_export_splits_files_at_size_limits_and_lerobot_loads_it(tmp_path):
    require_tools()
    rb = _camera_store(tmp_path / "a.zarr")
    options = {"lerobot_data_mb": 0.003, "lerobot_video_mb": 0.002, "lerobot_chunks_size": 2}
    convert(tmp_path / "a.zarr", tmp_path / "lr", dst_format="lerobot", options=options, progress=False)
    root = tmp_path / "lr"
    data_files = sorted(p.relative_to(root).as_posix() for p in root.glob("data/*/*.parquet"))
    video_files = sorted(p.relative_to(root).as_posix() for p in root.glob("videos/*/*/*.mp4"))
    assert len(data_files) > 2 and "data/chunk-001/file-000.parquet" in data_files  # 2 files per chunk
    assert len(video_files) > 2
    info = json.loads((root / "meta/info.json").read_text())
    assert info["data_files_size_in_mb"] == 0.003 and info["chunks_size"] == 2
    # lerobot's rule: a data file takes whole episodes while its open size (the file less parquet's footer) plus the
    # next episode's estimate (the file's bytes per frame times its frames) stays under the limit.
    limit, ends, start = 0.003 * 2**20, rb.episode_ends.tolist(), 0
    for rel in data_files[:-1]:
        meta = pq.read_metadata(root / rel)
        written = (root / rel).stat().st_size - meta.serialized_size - 8  # footer: metadata, its length, "PAR1"
        start += meta.num_rows
        assert start in ends, (rel, start)  # whole episodes
        following = ends[ends.index(start) + 1] - start
        assert written < limit <= written + written / meta.num_rows * following, (rel, written, following)
    # lerobot's own loader walks every data file and every video file.
    run_tool("read_lerobot.py", str(root), str(tmp_path / "got.npz"))
    got = np.load(tmp_path / "got.npz")
    np.testing.assert_array_equal(got["episode_ends"], rb.episode_ends)
    np.testing.assert_array_equal(got["action"], rb.read("action"))
    np.testing.assert_array_equal(got["observation.state"], rb.read("state"))
    cam = rb.read("cam").astype(int)
    assert np.abs(got["observation.images.cam"].astype(int) - cam).mean() < 4
    np.testing.assert_allclose(got["observation.images.cam"][..., 2].mean(axis=(1, 2)), cam[..., 2].mean(axis=(1, 2)),
                               atol=6)  # each frame from the right file and timestamp
    # Running statistics equal the ones computed over all frames at once.
    stats = json.loads((root / "meta/stats.json").read_text())
    state = rb.read("state").astype(np.float64)
    np.testing.assert_allclose(stats["observation.state"]["mean"], state.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats["observation.state"]["std"], state.std(0), rtol=1e-6)
    pixels = cam.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(np.ravel(stats["observation.images.cam"]["std"]), pixels.std(0), rtol=1e-9)
    np.testing.assert_allclose(np.ravel(stats["observation.images.cam"]["max"]), pixels.max(0))
    assert stats["action"]["count"] == [rb.n_steps]
