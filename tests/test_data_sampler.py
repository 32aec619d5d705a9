"""SequenceDataset: window alignment and padding, splits, statistics, DataLoader workers, lazy images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from robopolicy.data.replay_buffer import ReplayBuffer
from robopolicy.data.sampler import SequenceDataset, split_episodes

LENGTHS = [4, 6, 3, 5, 7, 2, 5, 4, 6, 3]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Each step's values encode (episode, step) so any window can be checked by hand."""
    path = tmp_path_factory.mktemp("sampler") / "s.zarr"
    rb = ReplayBuffer.create(path)
    for e, n in enumerate(LENGTHS):
        t = np.arange(n)
        rb.add_episode({
            "action": np.stack([np.full(n, e), t], 1).astype(np.float32),
            "pos": np.stack([t * 10.0 + e, -t], 1),
            "cam": np.broadcast_to((e * 16 + t)[:, None, None, None], (n, 4, 4, 3)).astype(np.uint8),
        })
    return path


def _expected(e: int, t: int, n: int, n_obs: int, horizon: int):
    obs_t = np.clip(np.arange(t - n_obs + 1, t + 1), 0, n - 1)
    act_t = np.clip(np.arange(t, t + horizon), 0, n - 1)
    return obs_t, act_t


@pytest.mark.parametrize("image_cache_bytes", [1 << 30, 0])  # images in RAM, and read lazily from zarr
def test_every_step_is_a_window_with_edge_padding(store, image_cache_bytes):
    ds = SequenceDataset(store, ["cam", "pos"], n_obs_steps=3, horizon=5, split="all",
                         image_cache_bytes=image_cache_bytes)
    assert len(ds) == sum(LENGTHS) and ds.action_dim == 2
    i = 0
    for e, n in enumerate(LENGTHS):
        for t in range(n):
            item = ds[i]
            obs_t, act_t = _expected(e, t, n, 3, 5)
            np.testing.assert_array_equal(item["action"].numpy(), np.stack([np.full(5, e), act_t], 1))
            np.testing.assert_array_equal(item["obs"]["pos"].numpy(), np.stack([obs_t * 10.0 + e, -obs_t], 1))
            np.testing.assert_array_equal(item["obs"]["cam"][:, 0, 0, 0].numpy(), e * 16 + obs_t)
            assert item["action"].dtype == torch.float32 and item["obs"]["pos"].dtype == torch.float32
            assert item["obs"]["cam"].dtype == torch.uint8 and item["obs"]["cam"].shape == (3, 4, 4, 3)
            i += 1
    picks = np.random.default_rng(0).permutation(len(ds))[:16]  # a shuffled batch, repeated frames included
    batch = ds[np.concatenate([picks, picks[:4]])]
    for j, k in enumerate([*picks, *picks[:4]]):
        torch.testing.assert_close(batch["obs"]["cam"][j], ds[int(k)]["obs"]["cam"])
        torch.testing.assert_close(batch["action"][j], ds[int(k)]["action"])


def test_split_is_seeded_disjoint_and_by_episode(store):
    train = SequenceDataset(store, ["pos"], split="train", val_ratio=0.2, seed=3)
    val = SequenceDataset(store, ["pos"], split="val", val_ratio=0.2, seed=3)
    assert len(val.episodes) == 2 and set(train.episodes).isdisjoint(val.episodes)
    assert sorted([*train.episodes, *val.episodes]) == list(range(len(LENGTHS)))
    assert len(train) + len(val) == sum(LENGTHS)
    np.testing.assert_array_equal(split_episodes(10, "val", 0.2, 3), val.episodes)
    # Episode of every val sample is a val episode: action[:, 0] holds the episode id.
    seen = {int(val[i]["action"][0, 0]) for i in range(len(val))}
    assert seen == set(val.episodes.tolist())
    limited = SequenceDataset(store, ["pos"], split="train", val_ratio=0.2, seed=3, max_episodes=3)
    assert len(limited.episodes) == 3 and set(limited.episodes) <= set(train.episodes)


def test_stats_and_obs_spec(store):
    ds = SequenceDataset(store, ["cam", "pos"], split="val", val_ratio=0.3, seed=0)
    pos = np.concatenate([np.stack([np.arange(LENGTHS[e]) * 10.0 + e, -np.arange(LENGTHS[e])], 1) for e in ds.episodes])
    stats = ds.stats()
    assert set(stats) == {"pos", "action"}
    np.testing.assert_allclose(stats["pos"]["mean"], pos.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["pos"]["std"], pos.std(0), rtol=1e-6)
    np.testing.assert_array_equal(stats["pos"]["min"], pos.min(0))
    np.testing.assert_array_equal(stats["action"]["max"], [max(ds.episodes), max(LENGTHS[e] for e in ds.episodes) - 1])
    assert ds.obs_spec() == {"cam": {"shape": [4, 4, 3], "kind": "rgb"}, "pos": {"shape": [2], "kind": "low_dim"}}


def test_dataloader_with_workers_matches_direct_indexing(store):
    ds = SequenceDataset(store, ["cam", "pos"], n_obs_steps=2, horizon=4, split="all")
    loader = DataLoader(ds, batch_size=8, num_workers=2, shuffle=False)
    batches = list(loader)
    assert sum(len(b["action"]) for b in batches) == len(ds)
    first = batches[1]
    for j in range(8):
        item = ds[8 + j]
        torch.testing.assert_close(first["action"][j], item["action"])
        torch.testing.assert_close(first["obs"]["cam"][j], item["obs"]["cam"])
    assert first["obs"]["cam"].shape == (8, 2, 4, 4, 3)
