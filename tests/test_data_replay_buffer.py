"""The native zarr store: layout, attributes, appending, zip, and diffusion_policy's v2 stores."""
from __future__ import annotations

import json

import numcodecs
import numpy as np
import pytest
import zarr

from robopolicy.data.replay_buffer import ReplayBuffer
from robopolicy.errors import DataError


def _episode(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "action": rng.standard_normal((n, 2)).astype(np.float32),
        "state": rng.standard_normal((n, 3)),
        "img": rng.integers(0, 256, (n, 6, 8, 3), dtype=np.uint8),
    }


def test_append_reopen_and_layout(tmp_path):
    path = tmp_path / "s.zarr"
    episodes = [_episode(n, i) for i, n in enumerate([3, 5, 1])]
    rb = ReplayBuffer.create(path, attrs={"fps": 10.0})
    rb.add_episode(episodes[0])
    rb.close()
    rb = ReplayBuffer.open(path, mode="a")  # appending later, as a hardware recorder does
    for ep in episodes[1:]:
        rb.add_episode(ep)
    rb = ReplayBuffer.open(path)
    assert rb.n_episodes == 3 and rb.n_steps == 9
    np.testing.assert_array_equal(rb.episode_ends, [3, 8, 9])
    assert rb.keys == ["action", "img", "state"]
    assert rb.attrs["fps"] == 10.0 and rb.attrs["format_version"] == 1
    for i, ep in enumerate(episodes):
        got = rb.get_episode(i)
        for key in ep:
            np.testing.assert_array_equal(got[key], ep[key])
            assert got[key].dtype == ep[key].dtype
    root = zarr.open_group(str(path), mode="r")
    assert root.metadata.zarr_format == 3
    assert root["meta/episode_ends"].dtype == np.int64
    assert root["data/img"].chunks == (1, 6, 8, 3)  # one frame per chunk
    assert root["data/state"].chunks[0] > 1000
    assert "blosc" in json.dumps(root["data/state"].metadata.to_dict()["codecs"])


def test_zip_store_written_whole_and_read_only(tmp_path):
    path = tmp_path / "s.zarr.zip"
    with ReplayBuffer.create(path) as rb:
        rb.add_episode(_episode(4, 0))
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr.zip"]  # build directory removed
    rb = ReplayBuffer.open(path)
    np.testing.assert_array_equal(rb.get_episode(0)["state"], _episode(4, 0)["state"])
    with pytest.raises(DataError, match="cannot be appended"):
        ReplayBuffer.open(path, mode="a")


def test_partial_append_is_trimmed_on_reopen(tmp_path):
    path = tmp_path / "s.zarr"
    rb = ReplayBuffer.create(path)
    rb.add_episode(_episode(3, 0))
    rb.array("action").append(np.ones((2, 2), np.float32))  # a crash after writing data, before episode_ends
    rb = ReplayBuffer.open(path, mode="a")
    assert rb.array("action").shape[0] == 3
    rb.add_episode(_episode(2, 1))
    np.testing.assert_array_equal(ReplayBuffer.open(path).get_episode(1)["action"], _episode(2, 1)["action"])


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"action": np.zeros((0, 2), np.float32), "state": np.zeros((0, 3)), "img": np.zeros((0, 6, 8, 3), np.uint8)},
         "empty episode"),
        ({**_episode(3, 0), "state": np.zeros((4, 3))}, "first \\(time\\) axis"),
        ({**_episode(3, 0), "action": np.array([[0, 1], [np.nan, 0], [0, 0]], np.float32)}, "NaN or inf at step 1"),
        ({**_episode(3, 0), "state": np.zeros((3, 4))}, "expected \\(3,\\) float64"),
        ({"action": np.zeros((3, 2), np.float32)}, "differ from the store's"),
    ],
)
def test_add_episode_rejects_bad_episodes(tmp_path, bad, match):
    rb = ReplayBuffer.create(tmp_path / "s.zarr")
    rb.add_episode(_episode(2, 0))
    with pytest.raises(DataError, match=match):
        rb.add_episode(bad)
    assert rb.n_episodes == 1


def _write_dp_v2_store(path, zip_it: bool) -> dict[str, np.ndarray]:
    """A store laid out and compressed as diffusion_policy's ReplayBuffer writes it (zarr v2, Jpeg2k images)."""
    from imagecodecs.numcodecs import Jpeg2k

    rng = np.random.default_rng(0)
    data = {
        "img": rng.integers(0, 256, (7, 16, 16, 3), dtype=np.uint8),
        "state": rng.standard_normal((7, 5)).astype(np.float32),
        "action": rng.standard_normal((7, 2)).astype(np.float32),
    }
    store = zarr.storage.ZipStore(str(path), mode="w") if zip_it else str(path)
    root = zarr.open_group(store, mode="w", zarr_format=2)
    for key, arr in data.items():
        compressor = Jpeg2k(level=50) if key == "img" else numcodecs.Blosc("zstd", 5, numcodecs.Blosc.NOSHUFFLE)
        chunks = (1, *arr.shape[1:]) if key == "img" else arr.shape
        root.create_array(f"data/{key}", data=arr, chunks=chunks, compressors=compressor)
    root.create_array("meta/episode_ends", data=np.array([4, 7], np.int64), chunks=(2,))
    if zip_it:
        store.close()
    return data


@pytest.mark.parametrize("zip_it", [False, True])
def test_reads_diffusion_policy_v2_store_with_jpeg2k(tmp_path, zip_it):
    path = tmp_path / ("dp.zarr.zip" if zip_it else "dp.zarr")
    data = _write_dp_v2_store(path, zip_it)
    rb = ReplayBuffer.open(path)
    assert rb.zarr_format == 2 and rb.n_episodes == 2
    ep = rb.get_episode(1)
    np.testing.assert_array_equal(ep["state"], data["state"][4:])
    # Jpeg2k at level 50 is lossy; random pixels stay within codec tolerance on average.
    assert np.abs(ep["img"].astype(int) - data["img"][4:]).mean() < 40


def test_open_reports_missing_and_corrupt(tmp_path):
    with pytest.raises(DataError, match="no such zarr store"):
        ReplayBuffer.open(tmp_path / "nope.zarr")
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w").create_group("data")
    with pytest.raises(DataError, match=r"\[meta/episode_ends\]: missing"):
        ReplayBuffer.open(tmp_path / "g.zarr")
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="truncated or corrupt"):
        ReplayBuffer.open(tmp_path / "bad.zip")
