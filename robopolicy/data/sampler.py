"""Episode-aware observation/action windows for behaviour cloning, as a torch Dataset.

A sample at step t of an episode holds observations t-n_obs_steps+1 … t and actions t … t+horizon-1;
indices outside the episode repeat its first/last frame (diffusion_policy's padding). Every step of
every selected episode is a sample. Only the selected split's episodes are loaded: low-dim arrays as
float32 in RAM, images as uint8 in RAM while they fit `image_cache_bytes` (forked DataLoader workers
share that memory), otherwise read lazily from zarr per window.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from robopolicy.data.replay_buffer import ReplayBuffer
from robopolicy.data.running_stats import key_stats
from robopolicy.data.spec import describe
from robopolicy.errors import DataError

DEFAULT_IMAGE_CACHE_BYTES = 8 << 30


def _take(source: np.ndarray, rows: np.ndarray, shared: bool) -> torch.Tensor:
    """source[rows] as a tensor. In a worker the result is allocated in shared memory up front: otherwise
    torch copies it there when sending it to the main process, which caps image batches at ~5k windows/s."""
    shape = (*rows.shape, *source.shape[1:])
    dtype = torch.from_numpy(source[:0]).dtype
    if shared:
        nbytes = int(np.prod(shape)) * source.dtype.itemsize
        out = torch.empty(0, dtype=dtype).set_(torch.UntypedStorage._new_shared(nbytes), 0, shape)
    else:
        out = torch.empty(shape, dtype=dtype)
    flat_out, flat_rows = out.numpy().reshape(len(rows.reshape(-1)), -1), rows.reshape(-1)
    flat_src = source.reshape(len(source), -1)
    if flat_src.shape[1] * source.dtype.itemsize >= 1024:
        for j, r in enumerate(flat_rows):  # row copies beat np.take/fancy indexing ~2x for image frames
            flat_out[j] = flat_src[r]
    else:
        flat_out[...] = flat_src[flat_rows]
    return out


def split_episodes(n_episodes: int, split: str, val_ratio: float, seed: int) -> np.ndarray:
    """Episode indices of a split: a seeded random `val_ratio` share (at least one, never all) is validation."""
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    all_eps = np.arange(n_episodes)
    if split == "all":
        return all_eps
    n_val = min(max(1, round(n_episodes * val_ratio)), n_episodes - 1) if val_ratio > 0 and n_episodes > 1 else 0
    val = np.zeros(n_episodes, dtype=bool)
    val[np.random.default_rng(seed).choice(n_episodes, size=n_val, replace=False)] = True
    return all_eps[val] if split == "val" else all_eps[~val]


class SequenceDataset(Dataset):
    """Windows of `n_obs_steps` observations and `horizon` actions from a ReplayBuffer store."""

    def __init__(
        self,
        store: str | Path | ReplayBuffer,
        obs_keys: list[str],
        action_key: str = "action",
        n_obs_steps: int = 2,
        horizon: int = 16,
        split: str = "train",
        val_ratio: float = 0.1,
        seed: int = 0,
        max_episodes: int | None = None,
        image_cache_bytes: int = DEFAULT_IMAGE_CACHE_BYTES,
    ) -> None:
        if n_obs_steps < 1 or horizon < 1:
            raise ValueError(f"n_obs_steps and horizon must be >= 1, got {n_obs_steps}, {horizon}")
        rb = store if isinstance(store, ReplayBuffer) else ReplayBuffer.open(store, mode="r")
        self.path = rb.path
        self.obs_keys = list(obs_keys)
        self.action_key = action_key
        self.n_obs_steps = n_obs_steps
        self.horizon = horizon
        for key in [*self.obs_keys, action_key]:
            if key not in rb.keys:
                raise DataError(rb.path, f"data/{key}", f"missing; the store has {rb.keys}")
        spec = describe(rb)["obs"]
        self._kinds = {k: spec.get(k, {}).get("kind", "low_dim") for k in self.obs_keys}

        episodes = split_episodes(rb.n_episodes, split, val_ratio, seed)
        if max_episodes is not None and len(episodes) > max_episodes:
            pick = np.random.default_rng(seed).choice(len(episodes), size=max_episodes, replace=False)
            episodes = episodes[np.sort(pick)]
        self.episodes = episodes
        ends = rb.episode_ends
        starts = np.concatenate([[0], ends[:-1]])
        self._src_slices = [slice(int(starts[e]), int(ends[e])) for e in episodes]
        lengths = np.asarray([s.stop - s.start for s in self._src_slices], dtype=np.int64)
        self.episode_ends = np.cumsum(lengths)
        self._n = int(self.episode_ends[-1]) if len(lengths) else 0
        ep_of_step = np.repeat(np.arange(len(lengths)), lengths)
        local_starts = self.episode_ends - lengths
        self._start = local_starts[ep_of_step] if len(lengths) else np.zeros(0, dtype=np.int64)
        self._last = self._start + lengths[ep_of_step] - 1 if len(lengths) else np.zeros(0, dtype=np.int64)

        self._data: dict[str, np.ndarray] = {}
        self._lazy: dict[str, Any] = {}
        image_bytes = 0
        for key in [*self.obs_keys, action_key]:
            arr = rb.array(key)
            if key != action_key and self._kinds[key] == "rgb":
                frame = int(np.prod(arr.shape[1:])) * np.dtype(arr.dtype).itemsize
                if image_bytes + frame * self._n <= image_cache_bytes:
                    self._data[key] = self._gather(rb, key)
                    image_bytes += frame * self._n
                else:
                    self._lazy[key] = arr
            else:
                data = self._gather(rb, key).astype(np.float32, copy=False)
                self._data[key] = data.reshape(len(data), -1) if key == action_key and data.ndim == 1 else data
        self._lazy_index = np.concatenate(
            [np.arange(s.start, s.stop) for s in self._src_slices]
        ) if self._lazy else None
        self.action_dim = int(np.prod(self._data[action_key].shape[1:]))
        self._shapes = {k: list(rb.array(k).shape[1:]) for k in self.obs_keys}

    def _gather(self, rb: ReplayBuffer, key: str) -> np.ndarray:
        arr = rb.array(key)
        if not self._src_slices:
            return np.zeros((0, *arr.shape[1:]), dtype=arr.dtype)
        if len(self._src_slices) == rb.n_episodes:
            return rb.read(key)
        return np.concatenate([rb.read(key, s) for s in self._src_slices])

    def __len__(self) -> int:
        return self._n

    def _indices(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Obs and action row indices for steps `t` (shape (B,)), clipped to each step's episode."""
        start, last = self._start[t][:, None], self._last[t][:, None]
        obs = np.clip(t[:, None] + np.arange(1 - self.n_obs_steps, 1), start, last)
        act = np.clip(t[:, None] + np.arange(self.horizon), start, last)
        return obs, act

    def _batch(self, t: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Gather a batch of windows straight into (in DataLoader workers: shared-memory) tensors."""
        obs_idx, act_idx = self._indices(t)
        shared = get_worker_info() is not None
        obs = {}
        for key in self.obs_keys:
            if key in self._lazy:
                # Only the frames this batch needs: a shuffled batch spans the whole store, so a min..max slice would
                # read nearly every frame.
                needed, rows = np.unique(self._lazy_index[obs_idx], return_inverse=True)
                source, rows = np.asarray(self._lazy[key].oindex[needed]), rows.reshape(obs_idx.shape)
            else:
                source, rows = self._data[key], obs_idx
            obs[key] = _take(source, rows, shared)
        action = _take(self._data[self.action_key], act_idx, shared).reshape(len(t), self.horizon, self.action_dim)
        return obs, action

    def __getitem__(self, i: int | list[int] | np.ndarray) -> dict[str, Any]:
        """One sample, or for a list of indices an already-batched sample (see `robopolicy.data.loader`)."""
        if isinstance(i, (list, np.ndarray)):
            obs, action = self._batch(np.asarray(i, dtype=np.int64))
            return {"obs": obs, "action": action}
        if not -self._n <= i < self._n:
            raise IndexError(f"sample {i} out of range for {self._n} samples")
        obs, action = self._batch(np.asarray([i % self._n]))
        return {"obs": {k: v[0] for k, v in obs.items()}, "action": action[0]}

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """Batched fetch used by a plain DataLoader: one vectorised gather, then per-sample views to collate."""
        obs, action = self._batch(np.asarray(indices, dtype=np.int64))
        return [{"obs": {k: v[j] for k, v in obs.items()}, "action": action[j]} for j in range(len(indices))]

    def obs_spec(self) -> dict[str, dict[str, Any]]:
        return {k: {"shape": list(self._shapes[k]), "kind": self._kinds[k]} for k in self.obs_keys}

    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        """Per-dimension min/max/mean/std of each low-dim obs key and the actions, over this split."""
        if self._n == 0:
            raise DataError(self.path, None, "no samples in this split; cannot compute statistics")
        keys = [k for k in self.obs_keys if self._kinds[k] == "low_dim"] + [self.action_key]
        return {key: key_stats(self._data[key]) for key in keys}

