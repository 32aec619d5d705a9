"""The device and backend choice of `robopolicy.train.distributed.setup` under torchrun's environment.

CI has no GPU, so the CUDA branch is exercised with `torch.cuda` and `init_process_group` replaced: what is
checked is the decision (which GPU a rank takes, NCCL on CUDA and gloo on the CPU), not NCCL itself; the gloo
path runs for real in tests/test_train_ddp.py and tests/test_rl_ddp.py.
"""

from __future__ import annotations

import pytest
import torch

from robopolicy.train import distributed


@pytest.fixture
def torchrun_env(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """torchrun's variables for rank 3 of 4 (local rank 1 on the second node), and a recording process group."""
    for key, value in {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    backends: list[str] = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: backends.append(backend))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 3)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 4)
    return backends


def test_auto_device_follows_cuda_availability(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert distributed.resolve_device("auto", local_rank=2) == torch.device("cuda", 2)
    assert distributed.resolve_device("cuda", local_rank=2) == torch.device("cuda", 2)
    assert distributed.resolve_device("cuda:0", local_rank=2) == torch.device("cuda", 0)  # an explicit index wins


def test_a_gpu_rank_takes_its_local_gpu_and_joins_with_nccl(monkeypatch: pytest.MonkeyPatch,
                                                            torchrun_env: list[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    chosen: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: chosen.append(device))
    info, device = distributed.setup("auto")
    assert device == torch.device("cuda", 1) and chosen == [device]
    assert torchrun_env == ["nccl"]
    assert (info.rank, info.world_size, info.local_rank, info.owns_group) == (3, 4, 1, True)
    assert not info.is_main and info.enabled


def test_a_cpu_rank_joins_with_gloo(monkeypatch: pytest.MonkeyPatch, torchrun_env: list[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: pytest.fail("no GPU to select"))
    info, device = distributed.setup("auto")
    assert device == torch.device("cpu") and torchrun_env == ["gloo"]
    assert info.owns_group and info.world_size == 4


def test_a_plain_launch_joins_no_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: pytest.fail("no group expected"))
    info, device = distributed.setup("cpu")
    assert info == distributed.SINGLE_PROCESS and device == torch.device("cpu")
