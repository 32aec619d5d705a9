"""Datasets and a resumable data order for BC training.

The batch drawn at optimisation step s is a pure function of (seed, s): epoch e = s // batches_per_epoch
is a seeded permutation of the dataset, cut into global batches, and each rank takes its contiguous
slice of the global batch. Resuming therefore needs only the step count, works with any `num_workers`
(indices are drawn in the main process), and is the same sharding DistributedSampler would give.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from robopolicy.specs import ConfigError, PolicyConfig, TrainConfig
from robopolicy.train.toy import BimodalToyDataset

TOY_PREFIX = "toy:"
TOY_TASKS = ("bimodal",)
TOY_SIZE = 4096


def build_datasets(train: TrainConfig, policy: PolicyConfig) -> tuple[Dataset, Dataset | None]:
    """(train, val or None) from `train.dataset`: "toy:bimodal" or the path of a zarr store."""
    if train.dataset.startswith(TOY_PREFIX):
        task = train.dataset[len(TOY_PREFIX):]
        if task not in TOY_TASKS:
            raise ConfigError(f"train.dataset: expected one of {[TOY_PREFIX + t for t in TOY_TASKS]} "
                              f"or a zarr path, got {train.dataset!r}")

        def toy(size: int, seed: int) -> BimodalToyDataset:
            return BimodalToyDataset(size, policy.horizon, policy.action.dim, policy.n_obs_steps, seed)

        val = toy(max(1, round(TOY_SIZE * train.val_ratio)), train.seed + 1) if train.val_ratio > 0 else None
        return toy(TOY_SIZE, train.seed), val

    from robopolicy.data.sampler import SequenceDataset  # the data layer (zarr) is only needed for real data

    def split(name: str) -> Dataset:
        return SequenceDataset(train.dataset, obs_keys=[o.key for o in policy.obs], n_obs_steps=policy.n_obs_steps,
                               horizon=policy.horizon, split=name, val_ratio=train.val_ratio, seed=train.seed,
                               max_episodes=train.max_episodes)

    val = split("val") if train.val_ratio > 0 else None
    if val is not None and len(val) == 0:
        raise ConfigError(f"train.val_ratio: the store has too few episodes for a validation split; set it to 0, "
                          f"got {train.val_ratio}")
    return split("train"), val


def check_dataset(spec: dict[str, dict[str, Any]], stats: dict[str, dict[str, np.ndarray]],
                  policy: PolicyConfig) -> None:
    """Fail before training when the data (`obs_spec()`, `stats()`) lacks the keys and shapes the policy expects."""
    for obs in policy.obs:
        if obs.key not in spec:
            raise ConfigError(f"policy.obs: key {obs.key!r} is not in the dataset (it has {sorted(spec)})")
        if tuple(spec[obs.key]["shape"]) != obs.shape:
            raise ConfigError(f"policy.obs[{obs.key}].shape: expected {tuple(spec[obs.key]['shape'])} "
                              f"(the dataset's), got {obs.shape}")
    action_dim = int(np.asarray(stats["action"]["mean"]).size)
    if action_dim != policy.action.dim:
        raise ConfigError(f"policy.action.dim: expected {action_dim} (the dataset's), got {policy.action.dim}")


class StepBatchSampler(Sampler[list[int]]):
    """Endless batches of indices for steps start_step, start_step+1, ...; this rank's slice of each."""

    def __init__(self, n: int, global_batch: int, seed: int, start_step: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if global_batch % world_size:
            raise ConfigError(f"train.batch_size: expected a multiple of the {world_size} processes "
                              f"(it is the global batch, split evenly), got {global_batch}")
        if n < global_batch:
            raise ConfigError(f"train.batch_size: expected at most the dataset's {n} samples, got {global_batch}")
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size
        self.batches_per_epoch = n // global_batch  # the incomplete last batch of each epoch is dropped

    def epoch_order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]))
        return torch.randperm(self.n, generator=generator)

    def __iter__(self) -> Iterator[list[int]]:
        per_rank = self.global_batch // self.world_size
        step = self.start_step
        epoch, order = -1, torch.empty(0, dtype=torch.long)
        while True:
            if step // self.batches_per_epoch != epoch:
                epoch = step // self.batches_per_epoch
                order = self.epoch_order(epoch)
            start = (step % self.batches_per_epoch) * self.global_batch + self.rank * per_rank
            yield order[start:start + per_rank].tolist()
            step += 1

