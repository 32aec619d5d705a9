"""Training state for exact resume, as named tensors + JSON (safetensors cannot hold pickles, by design).

What a resumed run needs besides the weights (which live in model.safetensors, EMA as `ema.*`):
optimizer moments (tensors), LR-scheduler and EMA counters (JSON), and `Progress`. Random numbers need
no saved state: the trainer reseeds torch/numpy/random from (seed, rank, step) before every step, and
the data order is a function of (seed, step) (see `robopolicy.train.data`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.training_utils import EMAModel

from robopolicy.checkpoint import CheckpointError

FORMAT = "robopolicy-train-state"
FORMAT_VERSION = 1
_OPT_PREFIX = "optimizer."


@dataclass
class LossWindow:
    """Running mean of losses since the last reset (kept in the state so a resume mid-window is exact)."""

    total: float = 0.0
    count: int = 0

    def add(self, value: float) -> None:
        self.total += value
        self.count += 1

    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def reset(self) -> None:
        self.total, self.count = 0.0, 0


@dataclass
class Progress:
    step: int = 0  # completed optimisation steps
    best_metric: float | None = None  # val loss, or mean train loss between evaluations when there is no val split
    best_step: int | None = None
    elapsed_s: float = 0.0  # wall time over all sessions of this run
    last_loss: float | None = None  # the last logged mean train loss
    log_window: LossWindow = field(default_factory=LossWindow)  # losses since the last CSV row
    eval_window: LossWindow = field(default_factory=LossWindow)  # losses since the last best-checkpoint decision

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        return cls(**{**data, "log_window": LossWindow(**data["log_window"]),
                      "eval_window": LossWindow(**data["eval_window"])})


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into `optimizer.{param}.{name}` tensors and JSON for the rest."""
    tensors, other = {}, {}
    for idx, entry in state["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{_OPT_PREFIX}{idx}.{name}"] = value
            else:
                other.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "state": other}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(_OPT_PREFIX):
            idx, name = key[len(_OPT_PREFIX):].split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    for idx, entry in meta["state"].items():
        state.setdefault(int(idx), {}).update(entry)
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def pack(progress: Progress, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
         ema: EMAModel | None, world_size: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(train_tensors, train_json) for `save_checkpoint`; EMA weights go separately as its `ema_state`."""
    tensors, opt_meta = flatten_optimizer(optimizer.state_dict())
    ema_meta = None if ema is None else {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
    return tensors, {"format": FORMAT, "format_version": FORMAT_VERSION, "progress": dataclasses.asdict(progress),
                     "optimizer": opt_meta, "scheduler": scheduler.state_dict(), "ema": ema_meta,
                     "world_size": world_size}


def unpack(tensors: dict[str, torch.Tensor], meta: dict[str, Any], optimizer: torch.optim.Optimizer,
           scheduler: torch.optim.lr_scheduler.LRScheduler, ema: EMAModel | None,
           ema_weights: list[torch.Tensor] | None, where: str) -> Progress:
    """Restore optimizer, scheduler and EMA in place from a checkpoint's training state; return the progress."""
    if meta.get("format") != FORMAT or not isinstance(meta.get("format_version"), int) \
            or meta["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{where}: field 'format' expected {FORMAT!r} version <= {FORMAT_VERSION}, "
                              f"got {meta.get('format')!r} version {meta.get('format_version')!r}")
    if (ema is None) != (meta["ema"] is None):
        raise CheckpointError(f"{where}: field 'ema' does not match train.use_ema={ema is not None}; "
                              "resume with the setting the run was started with")
    optimizer.load_state_dict(unflatten_optimizer(tensors, meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    if ema is not None:
        device = ema.shadow_params[0].device
        ema.load_state_dict({**meta["ema"], "shadow_params": [w.to(device) for w in ema_weights or []]})
    return Progress.from_json(meta["progress"])
