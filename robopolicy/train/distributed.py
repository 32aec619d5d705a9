"""torchrun / DistributedDataParallel setup: one process per device, rank 0 does all file I/O.

Launched plainly, everything here degrades to a single process with no process group, so the trainer
has one code path. Launched by `torchrun` (which sets RANK, WORLD_SIZE, LOCAL_RANK), the process group
uses gloo on the CPU and nccl on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialised the process group, so we tear it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" = CUDA when available, else CPU; under torchrun, plain "cuda" means this process's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def setup(device_name: str) -> tuple[Dist, torch.device]:
    """Join the process group torchrun prepared (or reuse one already initialised); pick the device."""
    if dist.is_available() and dist.is_initialized():
        info = Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
        return info, resolve_device(device_name, info.local_rank)
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size <= 1:
        return Dist(), resolve_device(device_name)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True), device


def teardown(info: Dist) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: Dist) -> None:
    if info.enabled:
        dist.barrier()


def mean_across_ranks(value: float, info: Dist, device: torch.device) -> float:
    """The mean of a scalar over all ranks (identity in a single process), so rank 0 logs global numbers."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size
