"""LeRobot export of the episodes metadata: meta/episodes/chunk-XXX/file-YYY.parquet split at a size limit as
lerobot 0.4 splits it, each row naming its own file, and the result loaded by lerobot's own LeRobotDataset."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq

from robopolicy.data.convert import convert
from robopolicy.data.convert.lerobot_stats import QUANTILES
from robopolicy.data.replay_buffer import ReplayBuffer
from tests.data_tools import convert_fails, require_tools, run_cli, run_tool

FPS = 10.0
TASK = "push the block"


def _store(path, n_episodes: int) -> ReplayBuffer:
    """Short low-dim episodes (1 to 5 steps) of three dtypes, so that many episode rows stay cheap to write."""
    rng = np.random.default_rng(7)
    rb = ReplayBuffer.create(path, attrs={"fps": FPS})
    for e in range(n_episodes):
        n = 1 + e % 5
        rb.add_episode({"action": rng.standard_normal((n, 2)).astype(np.float32),
                        "state": rng.standard_normal((n, 3)),
                        "reward": rng.standard_normal(n).astype(np.float32)})
    return rb


def _episode_files(root) -> dict[str, list[dict]]:
    """Every meta/episodes file (relative path) and its rows, in the order lerobot reads them."""
    return {p.relative_to(root).as_posix(): pq.read_table(p).to_pylist()
            for p in sorted(root.glob("meta/episodes/*/*.parquet"))}


def _assert_rows_name_their_file(files: dict[str, list[dict]]) -> None:
    for rel, rows in files.items():
        for row in rows:
            own = (f"meta/episodes/chunk-{row['meta/episodes/chunk_index']:03d}/"
                   f"file-{row['meta/episodes/file_index']:03d}.parquet")
            assert own == rel, (row["episode_index"], own, rel)


def test_episodes_metadata_spans_files_and_chunks_and_lerobot_loads_every_episode(tmp_path):
    require_tools()
    rb = _store(tmp_path / "a.zarr", 25)
    root = tmp_path / "lr"
    options = {"lerobot_episodes_mb": 0.001, "lerobot_chunks_size": 2, "task": TASK}
    convert(tmp_path / "a.zarr", root, dst_format="lerobot", options=options, progress=False)

    files = _episode_files(root)
    # lerobot writes episode rows ten at a time, so a file holds at least ten however small the limit;
    # two files per chunk, then the next chunk.
    assert list(files) == ["meta/episodes/chunk-000/file-000.parquet", "meta/episodes/chunk-000/file-001.parquet",
                           "meta/episodes/chunk-001/file-000.parquet"]
    assert [len(rows) for rows in files.values()] == [10, 10, 5]
    _assert_rows_name_their_file(files)
    # The data files keep their own (default, 100 MB) limit: one file.
    assert [p.relative_to(root).as_posix() for p in root.glob("data/*/*.parquet")] == [
        "data/chunk-000/file-000.parquet"]

    run_tool("read_lerobot.py", str(root), str(tmp_path / "got.npz"), str(tmp_path / "episodes.json"))
    got = np.load(tmp_path / "got.npz")
    episodes = json.loads((tmp_path / "episodes.json").read_text())
    ends = rb.episode_ends
    starts = np.concatenate([[0], ends[:-1]])
    np.testing.assert_array_equal(got["episode_ends"], ends)
    for key, ours in (("action", "action"), ("observation.state", "state"), ("reward", "reward")):
        # lerobot's loader hands out float32 tensors; the float64 state is in the file as written (checked below).
        np.testing.assert_array_equal(got[key], rb.read(ours).astype(np.float32))
    lengths = np.diff(ends, prepend=0)
    frame_index = np.concatenate([np.arange(n) for n in lengths])
    np.testing.assert_array_equal(got["episode_index"], np.repeat(np.arange(25), lengths))
    np.testing.assert_array_equal(got["frame_index"], frame_index)
    np.testing.assert_array_equal(got["index"], np.arange(rb.n_steps))
    np.testing.assert_array_equal(got["timestamp"], (frame_index / FPS).astype(np.float32))

    # Every episode's metadata, as lerobot loaded it from the three files.
    assert [ep["episode_index"] for ep in episodes] == list(range(25))
    for e, ep in enumerate(episodes):
        assert ep["length"] == lengths[e] and ep["tasks"] == [TASK]
        assert (ep["dataset_from_index"], ep["dataset_to_index"]) == (starts[e], ends[e])
        assert (ep["data/chunk_index"], ep["data/file_index"]) == (0, 0)
        assert (ep["meta/episodes/chunk_index"], ep["meta/episodes/file_index"]) == [(0, 0), (0, 1), (1, 0)][e // 10]

    # robopolicy's own reader walks the same files back to the original episodes.
    convert(root, tmp_path / "back.zarr", progress=False)
    back = ReplayBuffer.open(tmp_path / "back.zarr")
    np.testing.assert_array_equal(back.episode_ends, ends)
    for key, ours in (("action", "action"), ("observation.state", "state"), ("reward", "reward")):
        np.testing.assert_array_equal(back.read(key), rb.read(ours))


def test_episodes_metadata_follows_the_data_limit_by_default_and_fills_each_file_up_to_it(tmp_path):
    _store(tmp_path / "a.zarr", 300)
    root = tmp_path / "lr"
    limit_mb = 0.05  # a ten-row batch, with its per-episode stats columns, is ~15 kB: a few batches per file
    assert run_cli("convert", str(tmp_path / "a.zarr"), str(root), "--to", "lerobot",
                   "--lerobot-data-mb", str(limit_mb), "--no-progress") == 0
    files = _episode_files(root)
    assert len(files) >= 3
    _assert_rows_name_their_file(files)
    assert [ep["episode_index"] for rows in files.values() for ep in rows] == list(range(300))
    for rel in list(files)[:-1]:
        meta = pq.read_metadata(root / rel)
        # What the writer measures, as lerobot does: the open file, i.e. the closed one less its footer
        # (metadata, 4-byte length, "PAR1"). It stays under the limit and is no less than half of it.
        written = (root / rel).stat().st_size - meta.serialized_size - 8
        assert limit_mb / 2 * 2**20 < written < limit_mb * 2**20, (rel, written)
        assert meta.num_rows % 10 == 0  # whole ten-row batches, as lerobot writes them
    assert json.loads((root / "meta/info.json").read_text())["data_files_size_in_mb"] == limit_mb


def test_one_value_per_step_feature_is_refused_rather_than_reshaped(tmp_path, capsys):
    """lerobot has one layout for (T,) and (T, 1): a scalar column. (T,) round-trips (the reward above);
    (T, 1) would come back as (T,), so the export stops with exit 2 and leaves nothing behind."""
    rb = ReplayBuffer.create(tmp_path / "a.zarr", attrs={"fps": FPS})
    rb.add_episode({"action": np.zeros((3, 2), np.float32), "gripper": np.zeros((3, 1), np.float32)})
    convert_fails(tmp_path, capsys, tmp_path / "a.zarr", "[gripper]", "per-step shape (1,); expected () or 2+ values",
                  extra=("--to", "lerobot"))


def _numpy_stats(x: np.ndarray, visual: bool) -> dict[str, np.ndarray]:
    """An episode's statistics by plain numpy: per channel over every pixel in [0, 1], or per flattened dimension."""
    flat = x.reshape(-1, x.shape[-1]) / 255.0 if visual else x.reshape(len(x), -1).astype(np.float64)
    out = {"min": flat.min(0), "max": flat.max(0), "mean": flat.mean(0), "std": flat.std(0)}
    out |= {k: np.quantile(flat, q, axis=0) for k, q in QUANTILES.items()}
    return {k: v.reshape(-1, 1, 1) if visual else v for k, v in out.items()} | {"count": np.array([len(x)])}


def test_episode_stats_are_numpys_per_episode_and_stats_json_is_lerobots_aggregate_of_them(tmp_path):
    """Each episode row's stats/<feature>/<stat> columns, read by lerobot's own dataset tools, are numpy's over the
    episode's frames (the camera's before encoding, as lerobot computes them); lerobot's aggregate_stats of
    them is meta/stats.json; and the columns have the types of a dataset lerobot itself recorded."""
    require_tools()
    rng = np.random.default_rng(5)
    lengths = [1, 4, 7, 3, 12, 2, 5, 9, 1, 6, 8, 3]  # more than one ten-row episodes file at the limit below
    rb = ReplayBuffer.create(tmp_path / "a.zarr", attrs={"fps": FPS})
    for n in lengths:
        rb.add_episode({"action": rng.standard_normal((n, 2)).astype(np.float32),
                        "state": (rng.standard_normal((n, 3)) * 5 + 20).astype(np.float32),
                        "reward": rng.standard_normal(n).astype(np.float32),
                        "step": rng.integers(-50, 50, n),
                        "cam": rng.integers(0, 256, (n, 16, 24, 3), dtype=np.uint8)})
    root = tmp_path / "lr"
    convert(tmp_path / "a.zarr", root, dst_format="lerobot", options={"lerobot_episodes_mb": 0.001}, progress=False)
    assert len(_episode_files(root)) == 2
    run_tool("read_lerobot_stats.py", str(root), str(tmp_path / "stats.json"))
    got = json.loads((tmp_path / "stats.json").read_text())

    ends = rb.episode_ends
    frames = {"action": rb.read("action"), "observation.state": rb.read("state"), "reward": rb.read("reward"),
              "observation.step": rb.read("step"), "observation.images.cam": rb.read("cam")}
    frame_index = np.concatenate([np.arange(n) for n in lengths])
    frames |= {"timestamp": (frame_index / FPS).astype(np.float32), "frame_index": frame_index,
               "episode_index": np.repeat(np.arange(len(lengths)), lengths), "index": np.arange(ends[-1]),
               "task_index": np.zeros(ends[-1], np.int64)}
    assert len(got["episodes"]) == len(lengths)
    for e, (start, end) in enumerate(zip(np.concatenate([[0], ends[:-1]]), ends, strict=True)):
        assert set(got["episodes"][e]) == set(frames)
        for name, values in frames.items():
            want = _numpy_stats(values[start:end], name == "observation.images.cam")
            ours = got["episodes"][e][name]
            assert list(ours) == ["min", "max", "mean", "std", "count", *QUANTILES], name
            for stat, value in want.items():
                np.testing.assert_allclose(ours[stat], value, rtol=1e-12, atol=1e-15, err_msg=f"{e} {name} {stat}")

    # meta/stats.json, as lerobot loads it, is lerobot's aggregate of the episodes' stats; its moments are those of
    # all frames (its quantiles, like lerobot's, are the count-weighted means of the episodes').
    assert set(got["stats_json"]) == set(got["aggregate"]) == set(frames)
    for name, values in frames.items():
        for stat, value in got["aggregate"][name].items():
            np.testing.assert_allclose(got["stats_json"][name][stat], value, rtol=1e-12, err_msg=f"{name} {stat}")
        whole = _numpy_stats(values, name == "observation.images.cam")
        for stat in ("min", "max", "mean", "std", "count"):
            np.testing.assert_allclose(got["stats_json"][name][stat], whole[stat], rtol=1e-10, err_msg=f"{name} {stat}")

    # The column types of a dataset recorded by lerobot (make_lerobot.py: float32 state (3,) and action (2,), an
    # h264 camera, the default columns), for every feature the two share; integers keep int64 min/max.
    run_tool("make_lerobot.py", str(tmp_path / "ref"), "v3.0", "h264")
    run_tool("read_lerobot_stats.py", str(tmp_path / "ref" / "dataset"), str(tmp_path / "ref_stats.json"))
    ref = json.loads((tmp_path / "ref_stats.json").read_text())["columns"]
    shared = {c: t for c, t in ref.items() if "images.wrist" not in c}
    assert shared and {c: got["columns"][c] for c in shared} == shared
    assert got["columns"]["stats/observation.step/min"] == "list<element: int64>"
    assert got["columns"]["stats/observation.step/q50"] == "list<element: double>"
