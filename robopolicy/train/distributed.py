"""torchrun / DistributedDataParallel setup and collectives: one process per device, rank 0 does all file I/O.

Shared by the BC trainer and the fine-tuning learner. Launched plainly, everything here degrades to a single
process with no process group (every reduction is the identity), so callers have one code path. Launched by
`torchrun` (which sets RANK, WORLD_SIZE, LOCAL_RANK), the process group uses gloo on the CPU and nccl on CUDA.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
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


SINGLE_PROCESS = Dist()  # the default of functions that take a process group


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


def reduce_across_ranks(values: Sequence[float], info: Dist, device: torch.device, op: str = "sum") -> list[float]:
    """Element-wise sum ("sum") or maximum ("max") of a few scalars over all ranks, in one all-reduce."""
    if not info.enabled:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.tolist()


def mean_across_ranks(value: float, info: Dist, device: torch.device) -> float:
    """The mean of a scalar over all ranks (identity in a single process), so rank 0 logs global numbers."""
    return reduce_across_ranks([value], info, device)[0] / info.world_size


def gather_across_ranks(tensor: torch.Tensor, info: Dist, device: torch.device, dim: int = 0) -> torch.Tensor:
    """Every rank's `tensor` (same shape on all) concatenated along `dim` in rank order, on every rank."""
    if not info.enabled:
        return tensor
    local = tensor.to(device)
    parts = [torch.empty_like(local) for _ in range(info.world_size)]
    dist.all_gather(parts, local.contiguous())
    return torch.cat(parts, dim).to(tensor.device)


def moments_across_ranks(x: torch.Tensor, info: Dist) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased variance of all ranks' elements of `x` together (two passes, for accuracy)."""
    if not info.enabled:
        return x.mean(), x.var()
    x = x.double()
    total = torch.stack([x.sum(), x.new_tensor(x.numel())])
    dist.all_reduce(total)
    mean = total[0] / total[1]
    squares = ((x - mean) ** 2).sum()
    dist.all_reduce(squares)
    return mean, squares / (total[1] - 1)


def average_gradients(parameters: Iterable[torch.nn.Parameter], info: Dist) -> None:
    """Replace each gradient by its mean over all ranks (one flat all-reduce), as DDP's backward does.

    For learners whose losses do not run through one module's forward (the fine-tuning algorithms call into
    the policy's parts), so DistributedDataParallel cannot wrap them. Parameters without a gradient are
    skipped: which parameters a loss reaches does not depend on the data, so they are the same on every rank.
    """
    if not info.enabled:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
