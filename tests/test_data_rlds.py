"""RLDS import, checked value by value against a dataset that tensorflow-datasets' own builder wrote."""
from __future__ import annotations

import json
import shutil
import struct
import tracemalloc

import numpy as np
import pytest

from robopolicy.data.convert import convert, detect_format
from robopolicy.data.replay_buffer import ReplayBuffer
from tests.data_tools import HERE, convert_fails, require_tfds, run_cli, run_tool

RECIPE = HERE / "rlds_toy.toml"


@pytest.fixture(scope="module")
def rlds(tmp_path_factory):
    out = tmp_path_factory.mktemp("rlds")
    run_tool("make_rlds.py", str(out), python=require_tfds())
    return out


def test_default_key_map_reproduces_what_tfds_reads(tmp_path, rlds, capsys):
    src = rlds / "rlds_toy"  # the dataset directory; its latest version directory is found
    assert detect_format(src).name == "rlds"
    assert run_cli("convert", str(src), str(tmp_path / "r.zarr"), "--no-progress") == 0
    assert "frames    unknown (not in the metadata)" in capsys.readouterr().out
    ex = np.load(rlds / "expected.npz")
    rb = ReplayBuffer.open(tmp_path / "r.zarr")
    np.testing.assert_array_equal(rb.episode_ends, ex["episode_ends"])  # 3 shards, TFDS's read order
    assert rb.keys == ["action", "discount", "image", "is_terminal", "reward", "state", "wrist_image"]
    for key in ("action", "discount", "is_terminal", "reward"):
        np.testing.assert_array_equal(rb.read(key), ex[key])
        assert rb.read(key).dtype == ex[key].dtype
    np.testing.assert_array_equal(rb.read("image"), ex["observation/image"])  # PNG
    np.testing.assert_array_equal(rb.read("state"), ex["observation/state"])
    # JPEG: exactly TensorFlow's accurate-DCT decode; TFDS's default (fast DCT) is within a few grey levels.
    np.testing.assert_array_equal(rb.read("wrist_image"), ex["wrist_image_accurate"])
    assert np.abs(rb.read("wrist_image").astype(int) - ex["observation/wrist_image"]).max() <= 16
    assert set(rb.attrs["obs"]) == {"image", "state", "wrist_image"}
    meta = rb.attrs["source"]["episode_metadata"]
    assert [m["language_instruction"] for m in meta] == ex["instructions"].tolist()
    assert [m["file_path"] for m in meta] == ex["file_paths"].tolist()


def test_recipe_maps_and_concatenates_features(tmp_path, rlds):
    convert(rlds / "rlds_toy" / "1.0.0", tmp_path / "r.zarr", src_format="rlds", recipe=RECIPE, progress=False)
    ex = np.load(rlds / "expected.npz")
    rb = ReplayBuffer.open(tmp_path / "r.zarr")
    assert rb.keys == ["action", "agentview_image", "state", "terminal", "wrist_image"]
    want = np.concatenate([ex["action"], ex["reward"][:, None]], axis=1)
    np.testing.assert_array_equal(rb.read("action"), want)
    np.testing.assert_array_equal(rb.read("agentview_image"), ex["observation/image"])
    np.testing.assert_array_equal(rb.read("terminal"), ex["is_terminal"])
    assert rb.attrs["fps"] == 10.0 and rb.attrs["action"]["convention"]["mode"] == "delta"
    assert list(rb.attrs["obs"]) == ["agentview_image", "wrist_image", "state"]
    assert rb.attrs["source"]["recipe"] == str(RECIPE)


def _copy(rlds, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(rlds / "rlds_toy" / "1.0.0", dst)
    return dst


def _records(shard) -> list[bytes]:
    from tfrecord.reader import tfrecord_iterator

    return [bytes(r) for r in tfrecord_iterator(str(shard))]


def _write_records(shard, records: list[bytes]) -> None:
    """TFRecord framing: length, its masked CRC, the record, its masked CRC (as TensorFlow writes it)."""
    from tfrecord.writer import TFRecordWriter

    with open(shard, "wb") as f:
        for record in records:
            length = struct.pack("<Q", len(record))
            f.write(length + TFRecordWriter.masked_crc(length) + record + TFRecordWriter.masked_crc(record))


def test_truncated_shard(tmp_path, rlds, capsys):
    src = _copy(rlds, tmp_path)
    shard = src / "rlds_toy-train.tfrecord-00002-of-00003"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size * 2 // 3])  # cuts into its second record
    convert_fails(tmp_path, capsys, src, str(shard), "record 1", "truncated shard")


def test_shard_truncated_at_a_record_boundary(tmp_path, rlds, capsys):
    """Whole records missing leave a well-formed file: only dataset_info.json's shard length tells."""
    src = _copy(rlds, tmp_path)
    shard = src / "rlds_toy-train.tfrecord-00002-of-00003"
    records = _records(shard)
    assert len(records) >= 2
    _write_records(shard, records[:1])
    convert_fails(tmp_path, capsys, src, str(shard),
                  f"1 episodes; dataset_info.json says {len(records)} (truncated shard?)")


def test_episode_boundary_flags_are_checked(tmp_path, rlds, capsys):
    """is_first / is_last are implied by the episode boundaries in the output, so a record that disagrees is refused."""
    from tfrecord import example_pb2

    src = _copy(rlds, tmp_path)
    shard = src / "rlds_toy-train.tfrecord-00000-of-00003"
    records = _records(shard)
    example = example_pb2.Example()
    example.ParseFromString(records[0])
    flags = example.features.feature["steps/is_last"].int64_list.value
    flags[:] = [1] * len(flags)
    _write_records(shard, [example.SerializeToString(), *records[1:]])
    convert_fails(tmp_path, capsys, src, str(shard), "[record 0/steps/is_last]",
                  f"true at steps {list(range(len(flags)))}; expected only the last step")


def test_missing_feature_in_the_records(tmp_path, rlds, capsys):
    src = _copy(rlds, tmp_path)
    features = json.loads((src / "features.json").read_text())
    steps = features["featuresDict"]["features"]["steps"]["sequence"]["feature"]
    obs = steps["featuresDict"]["features"]["observation"]
    obs["featuresDict"]["features"]["depth"] = {"tensor": {"dtype": "float32", "shape": {"dimensions": ["2"]}}}
    (src / "features.json").write_text(json.dumps(features))
    shard = src / "rlds_toy-train.tfrecord-00000-of-00003"
    convert_fails(tmp_path, capsys, src, str(shard), "record 0/steps/observation/depth", "missing from the record")


def test_wrong_key_map(tmp_path, rlds, capsys):
    src = rlds / "rlds_toy" / "1.0.0"
    recipe = tmp_path / "bad.toml"
    recipe.write_text('[arrays]\naction = "action"\ncam = "observation/camera"\n')
    convert_fails(tmp_path, capsys, src, str(recipe), "arrays.cam", "'observation/camera' is not a step feature",
                  extra=("--recipe", str(recipe)))
    recipe.write_text('[arrays]\nimage = "observation/image"\n')
    convert_fails(tmp_path, capsys, src, str(recipe), "arrays.action", "missing", extra=("--recipe", str(recipe)))
    recipe.write_text('fps = 10\nkeys = {}\n[arrays]\naction = "action"\n')
    convert_fails(tmp_path, capsys, src, str(recipe), "[keys]", "unknown field", extra=("--recipe", str(recipe)))
    convert_fails(tmp_path, capsys, RECIPE, "recipe", "applies to rlds only", extra=("--recipe", str(RECIPE),
                                                                                      "--format", "zarr"))


def test_memory_stays_flat_as_the_dataset_grows(tmp_path):
    """Streaming: episodes are read, checked and written one at a time, so twice the episodes (in as many shards)
    leave the peak of Python-tracked memory (numpy arrays included) within one episode of what half of them need."""
    python = require_tfds()
    for n in (6, 12):
        run_tool("make_rlds.py", str(tmp_path / f"rlds{n}"), str(n), "40", "64", python=python)
    convert(tmp_path / "rlds6" / "rlds_toy", tmp_path / "warm.zarr", progress=False)  # lazy imports, caches

    def peak(n: int) -> int:
        tracemalloc.start()
        try:
            convert(tmp_path / f"rlds{n}" / "rlds_toy", tmp_path / f"r{n}.zarr", progress=False)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, big = peak(6), peak(12)
    rb = ReplayBuffer.open(tmp_path / "r12.zarr")
    episode = sum(rb.read(k).nbytes for k in rb.keys) // rb.n_episodes  # ~0.94 MB: 40 steps of two 64x64 cameras
    assert rb.n_episodes == 12 and rb.n_steps == 480
    assert big - small < episode, (small, big, episode)
