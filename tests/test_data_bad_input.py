"""Bad input: a clear error naming file, key and expectation, exit code 2, and nothing left at the destination."""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from robopolicy.atomic import DestinationExistsError, atomic_output
from robopolicy.data.replay_buffer import ReplayBuffer
from robopolicy.errors import DataError
from tests.data_tools import convert_fails as _fails
from tests.data_tools import run_cli


def _robomimic(path, **overrides):
    """A two-demo robomimic file; `overrides` replace datasets of demo_1 (None deletes)."""
    with h5py.File(path, "w") as f:
        for k in (0, 1):
            demo = {"actions": np.zeros((4, 2)), "obs/pos": np.zeros((4, 3))}
            if k == 1:
                demo.update(overrides)
            for key, arr in demo.items():
                if arr is not None:
                    f.create_dataset(f"data/demo_{k}/{key}", data=arr)
    return path


def test_mismatched_lengths(tmp_path, capsys):
    src = _robomimic(tmp_path / "a.hdf5", **{"obs/pos": np.zeros((5, 3))})
    _fails(tmp_path, capsys, src, str(src), "data/demo_1/pos", "5 rows; expected 4")


def test_nan_in_actions(tmp_path, capsys):
    actions = np.zeros((4, 2))
    actions[2, 1] = np.nan
    src = _robomimic(tmp_path / "a.hdf5", actions=actions)
    _fails(tmp_path, capsys, src, str(src), "data/demo_1/action", "NaN or inf at step 2")


def test_empty_episode(tmp_path, capsys):
    src = _robomimic(tmp_path / "a.hdf5", actions=np.zeros((0, 2)), **{"obs/pos": np.zeros((0, 3))})
    _fails(tmp_path, capsys, src, "data/demo_1", "empty episode")


def test_missing_key(tmp_path, capsys):
    src = _robomimic(tmp_path / "a.hdf5", actions=None)
    _fails(tmp_path, capsys, src, str(src), "data/demo_1/actions", "missing")
    _fails(tmp_path, capsys, _robomimic(tmp_path / "b.hdf5"), "mask/nope", "missing", extra=("--filter-key", "nope"))


def test_truncated_hdf5(tmp_path, capsys):
    good = _robomimic(tmp_path / "good.hdf5")
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _fails(tmp_path, capsys, bad, str(bad), "not a readable HDF5 file (truncated or corrupt?)")


def test_corrupt_zarr_chunk(tmp_path, capsys):
    rb = ReplayBuffer.create(tmp_path / "s.zarr")
    rb.add_episode({"action": np.ones((3, 2), np.float32)})  # all-zero chunks are not stored at all
    chunks = (tmp_path / "s.zarr" / "data" / "action").rglob("*")
    chunk = next(p for p in chunks if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(b"garbage")
    _fails(tmp_path, capsys, tmp_path / "s.zarr", "data/action", "could not be read")


def _lerobot(tmp_path):
    """A LeRobotDataset v3.0 (robopolicy's writer): two episodes, a state, an H.264 camera."""
    rb = ReplayBuffer.create(tmp_path / "src.zarr", attrs={"fps": 10.0})
    for e in range(2):
        cam = np.full((6, 16, 16, 3), 40 * e + 20, np.uint8)
        rb.add_episode({"action": np.zeros((6, 2), np.float32), "state": np.ones((6, 3), np.float32), "cam": cam})
    root = tmp_path / "lr"
    assert run_cli("convert", str(tmp_path / "src.zarr"), str(root), "--to", "lerobot", "--no-progress") == 0
    return root


@pytest.mark.parametrize("damage", ["truncated video", "missing video", "truncated data", "missing column"])
def test_lerobot_damaged_files(tmp_path, capsys, damage):
    import pyarrow.parquet as pq

    root = _lerobot(tmp_path)
    video = root / "videos/observation.images.cam/chunk-000/file-000.mp4"
    data = root / "data/chunk-000/file-000.parquet"
    if damage == "truncated video":
        video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
        expected = (str(video), "[observation.images.cam]", "not a decodable video (truncated or corrupt?)")
    elif damage == "missing video":
        video.unlink()
        expected = (str(root), "[videos/observation.images.cam/chunk-000/file-000.mp4]",
                    "missing; expected the video of observation.images.cam for episode 0")
    elif damage == "truncated data":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
        expected = (str(root), "[data/chunk-000/file-000.parquet]", "not a readable parquet file")
    else:
        pq.write_table(pq.read_table(data).drop_columns(["observation.state"]), data)
        expected = ("[data/chunk-000/file-000.parquet:observation.state]", "missing column")
    capsys.readouterr()
    _fails(tmp_path, capsys, root, *expected)


def test_lerobot_bad_info(tmp_path, capsys):
    root = tmp_path / "lr"
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text("{not json")
    _fails(tmp_path, capsys, root, "meta/info.json", "not valid JSON")
    info = {"codebase_version": "v1.6", "fps": 10, "features": {}, "data_path": "x"}
    (root / "meta" / "info.json").write_text(json.dumps(info))
    _fails(tmp_path, capsys, root, "codebase_version", "expected one of")


def test_unknown_format_and_missing_source(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    _fails(tmp_path, capsys, tmp_path / "notes.txt", "notes.txt",
           "unrecognised dataset format; expected one of: zarr, robomimic, lerobot, minari")
    _fails(tmp_path, capsys, tmp_path / "nothing.hdf5", "nothing.hdf5", "no such file")
    source = str(_robomimic(tmp_path / "a.hdf5"))
    assert run_cli("convert", source, str(tmp_path / "out" / "x.bin"), "--no-progress") == 2
    assert "pass --to" in capsys.readouterr().err


def test_existing_destination_needs_overwrite(tmp_path, capsys):
    src = _robomimic(tmp_path / "a.hdf5")
    dst = tmp_path / "dst.zarr"
    dst.mkdir()
    (dst / "keep.txt").write_text("old")
    assert run_cli("convert", str(src), str(dst), "--no-progress") == 2
    assert "destination exists; pass --overwrite" in capsys.readouterr().err
    assert (dst / "keep.txt").read_text() == "old"
    assert run_cli("convert", str(src), str(dst), "--no-progress", "--overwrite") == 0
    assert ReplayBuffer.open(dst).n_episodes == 2 and not (dst / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.hdf5", "dst.zarr"]


def test_failed_overwrite_keeps_the_old_output(tmp_path, capsys):
    dst = tmp_path / "dst.zarr"
    assert run_cli("convert", str(_robomimic(tmp_path / "a.hdf5")), str(dst), "--no-progress") == 0
    bad = _robomimic(tmp_path / "bad.hdf5", actions=np.full((4, 2), np.inf))
    assert run_cli("convert", str(bad), str(dst), "--no-progress", "--overwrite") == 2
    assert ReplayBuffer.open(dst).n_episodes == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.hdf5", "bad.hdf5", "dst.zarr"]


def test_atomic_output_is_generic(tmp_path):
    dst = tmp_path / "ckpt.bin"
    with atomic_output(dst) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith("ckpt.bin")
        tmp.write_bytes(b"v1")
    with pytest.raises(DestinationExistsError), atomic_output(dst):
        pass
    with pytest.raises(RuntimeError), atomic_output(dst, overwrite=True) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer crashed")
    assert dst.read_bytes() == b"v1" and [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"]
    shutil.rmtree(tmp_path)


def test_each_episode_is_validated_once_with_one_message_style(tmp_path, monkeypatch):
    import robopolicy.data.convert as convert_mod
    import robopolicy.data.replay_buffer as rb_mod
    from robopolicy.data.validate import validate_episode

    calls = []

    def counted(*args, **kwargs):
        calls.append(args[1])
        return validate_episode(*args, **kwargs)

    for module in (convert_mod, rb_mod):
        monkeypatch.setattr(module, "validate_episode", counted)
    convert_mod.convert(_robomimic(tmp_path / "a.hdf5"), tmp_path / "a.zarr", progress=False)
    assert calls == ["data/demo_0", "data/demo_1"]  # by the pipeline; the store does not check them again
    # Appending straight to a store goes through the same check, with the same wording.
    store = ReplayBuffer.open(tmp_path / "a.zarr", mode="a")
    with pytest.raises(DataError, match=r"a.zarr \[episode 2/pos\]: has 5 rows; expected 4 \(the length of 'action'\)"):
        store.add_episode({"action": np.zeros((4, 2)), "pos": np.zeros((5, 3))})
    assert calls[-1] == "episode 2"
