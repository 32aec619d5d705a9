"""Behavior-cloning trainer: AdamW, warmup + cosine LR, grad clipping, EMA, checkpoints, exact resume, DDP.

One step = one global batch = one optimizer update, on one process or many (torchrun). Everything random
in step s (diffusion noise, timesteps, crops) is seeded from (seed, rank, s) and the data order is a
function of (seed, s), so a run resumed from a checkpoint logs exactly the losses it would have logged
uninterrupted. Checkpoints: `out_dir/checkpoints/{step_000500, latest, best}`, each a full policy
checkpoint (raw + EMA weights) plus the training state (see `robopolicy.train.state`).
"""

from __future__ import annotations

import dataclasses
import math
import random
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from robopolicy.atomic import atomic_output, write_json
from robopolicy.checkpoint import (
    CheckpointError,
    load_train_state,
    load_weights,
    read_policy_config,
    save_checkpoint,
)
from robopolicy.data.loader import make_loader
from robopolicy.distill import distill_policy
from robopolicy.policy import Policy, load_policy
from robopolicy.specs import ConfigError, PolicyConfig, RunConfig, to_dict
from robopolicy.train import distributed, state
from robopolicy.train.data import StepBatchSampler, build_datasets, check_dataset
from robopolicy.train.runlog import RunLog

LATEST, BEST = "latest", "best"
_VAL_STREAM = 1 << 30  # seeds validation apart from every (seed, rank, step) training key


@dataclass
class TrainResult:
    policy: Policy  # the deployable weights (EMA when enabled), in eval mode
    out_dir: Path
    step: int
    final_loss: float | None  # the last logged (mean) train loss; on rank 0 only, like the next two
    best_metric: float | None  # val loss (or smoothed train loss) of the `best` checkpoint
    best_step: int | None

    @property
    def checkpoints(self) -> Path:
        return self.out_dir / "checkpoints"


def seed_everything(*key: int) -> None:
    """Seed torch (all devices), numpy and random from a tuple of non-negative integers."""
    a, b = np.random.SeedSequence(list(key)).generate_state(2)
    torch.manual_seed(int(a))
    np.random.seed(int(b))
    random.seed(int(a))


def _checkpoint_to_resume(ckpt_dir: Path, resume: bool | str) -> Path | None:
    """resume: "auto" (latest if present), "never"/False, True (latest, required) or a checkpoint path."""
    latest = ckpt_dir / LATEST
    if resume == "auto":
        return latest if latest.exists() else None
    if resume in ("never", False):
        if ckpt_dir.exists() and any(ckpt_dir.iterdir()):
            raise ConfigError(f"train.out_dir: {ckpt_dir.parent} already holds checkpoints; resume that run "
                              "(--resume auto) or choose another output directory")
        return None
    path = latest if resume is True else Path(resume)
    if not path.exists():
        raise CheckpointError(f"{path}: no checkpoint to resume from")
    return path


class Trainer:
    """Builds the policy, optimizer, schedule, EMA and data from a RunConfig, then runs the loop."""

    def __init__(self, run: RunConfig, info: distributed.Dist, device: torch.device,
                 dataset: Dataset | None = None) -> None:
        self.run, self.cfg, self.info, self.device = run, run.train, info, device
        self.out_dir = Path(self.cfg.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.train_set, self.val_set = (dataset, None) if dataset is not None else build_datasets(self.cfg, run.policy)
        stats = self.train_set.stats()
        check_dataset(self.train_set.obs_spec(), stats, run.policy)

        seed_everything(self.cfg.seed)  # identical initial weights on every rank
        if self.cfg.teacher:
            # the student inherits the teacher's normalizer and frozen encoder, so both heads see the same cond
            self.policy = distill_policy(load_policy(self.cfg.teacher, device=device), run.policy.head.params)
        else:
            self.policy = Policy(run.policy)
            self.policy.fit_normalizer(stats)
        self.policy.to(device).train()
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self.scheduler = get_scheduler("cosine", self.optimizer, num_warmup_steps=self.cfg.warmup_steps,
                                       num_training_steps=self.cfg.steps)
        self.ema = EMAModel(self.policy.parameters(), decay=self.cfg.ema_max_decay, use_ema_warmup=True,
                            power=self.cfg.ema_power) if self.cfg.use_ema else None
        self.progress = state.Progress()

    # ---- checkpoints ----------------------------------------------------------------------------------------

    def ema_state(self) -> dict[str, torch.Tensor] | None:
        if self.ema is None:
            return None
        names = [name for name, _ in self.policy.named_parameters()]
        return dict(zip(names, self.ema.shadow_params))

    def save(self, *names: str) -> None:
        """Write the current state once, as checkpoint `names[0]`, and copy it to the other names."""
        first = self.ckpt_dir / names[0]
        tensors, meta = state.pack(self.progress, self.optimizer, self.scheduler, self.ema, self.info.world_size)
        save_checkpoint(first, self.policy, ema_state=self.ema_state(), train_tensors=tensors,
                        train_json=meta, extra_config={"train": to_dict(self.cfg)})
        for name in names[1:]:
            with atomic_output(self.ckpt_dir / name, overwrite=True) as tmp:
                shutil.copytree(first, tmp)

    def load(self, path: Path) -> None:
        """Restore weights, EMA, optimizer, schedule and progress from a checkpoint written by `save`."""
        if to_dict(read_policy_config(path)) != to_dict(self.run.policy):
            raise ConfigError(f"policy: differs from the config of checkpoint {path}; resume with the same [policy]")
        raw, ema = load_weights(path, self.policy)
        self.policy.load_state_dict(raw, strict=False)
        ema_weights = [ema[name] for name, _ in self.policy.named_parameters()] if self.ema else None
        tensors, meta = load_train_state(path)
        if meta.get("world_size") != self.info.world_size:
            warnings.warn(f"{path} was trained with {meta.get('world_size')} processes, resuming with "
                          f"{self.info.world_size}: the data order is kept, per-process noise is not", stacklevel=2)
        self.progress = state.unpack(tensors, meta, self.optimizer, self.scheduler, self.ema, ema_weights,
                                     str(path / "train_state.json"))

    @contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Temporarily swap the EMA weights into the policy (for validation)."""
        if self.ema is None:
            yield
            return
        self.ema.store(self.policy.parameters())
        self.ema.copy_to(self.policy.parameters())
        try:
            yield
        finally:
            self.ema.restore(self.policy.parameters())

    # ---- steps ----------------------------------------------------------------------------------------------

    def update(self, model: torch.nn.Module, batch: dict, step: int) -> tuple[float, torch.Tensor, float]:
        """One optimizer step; returns (loss of this rank's batch, grad norm before clipping, lr used).

        The grad norm stays a tensor: it is read on the host only for the rows that log it.
        """
        seed_everything(self.cfg.seed, self.info.rank, step)
        lr = self.scheduler.get_last_lr()[0]
        loss = model(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.step(self.policy.parameters())
        return loss.item(), grad_norm, lr

    @torch.no_grad()
    def val_loss(self) -> float:
        """Mean loss over the validation split with the EMA weights (the ones a checkpoint serves), fixed noise."""
        seed_everything(self.cfg.seed, _VAL_STREAM)
        self.policy.eval()
        total, count = 0.0, 0
        with self.ema_weights():
            for batch in make_loader(self.val_set, self.cfg.batch_size, shuffle=False,
                                     num_workers=self.cfg.num_workers):
                n = len(batch["action"])
                total += self.policy.loss(batch).item() * n
                count += n
        self.policy.train()
        return total / count

    def select_best(self) -> tuple[float | None, bool]:
        """Track the selection metric (val loss, else mean train loss since last time).

        Returns (the validation loss or None without a validation split, whether the metric improved,
        i.e. whether to write `best`).
        """
        p = self.progress
        val = self.val_loss() if self.val_set is not None else None
        metric = val if val is not None else p.eval_window.mean()
        p.eval_window.reset()
        improved = metric is not None and (p.best_metric is None or metric < p.best_metric)
        if improved:
            p.best_metric, p.best_step = metric, p.step
        return val, improved

    # ---- the loop -------------------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        cfg, info, p = self.cfg, self.info, self.progress
        model: torch.nn.Module = self.policy
        if info.enabled:
            on_gpu = self.device.type == "cuda"
            model = DistributedDataParallel(self.policy, device_ids=[self.device] if on_gpu else None)
        sampler = StepBatchSampler(len(self.train_set), cfg.batch_size, cfg.seed, p.step, info.rank, info.world_size)
        batches = iter(make_loader(self.train_set, batch_sampler=sampler, num_workers=cfg.num_workers,
                                   pin_memory=self.device.type == "cuda", persistent_workers=cfg.num_workers > 0))
        self.log = RunLog(self.out_dir, p.step, cfg.tensorboard) if info.is_main else None
        self.bar = tqdm(total=cfg.steps, initial=p.step, desc="train", dynamic_ncols=True,
                        disable=not (info.is_main and cfg.progress))
        self.clock = _Clock(p.elapsed_s, p.step)
        try:
            for step in range(p.step + 1, cfg.steps + 1):
                loss, grad_norm, lr = self.update(model, next(batches), step)
                loss = distributed.mean_across_ranks(loss, info, self.device)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss} at step {step}; lower train.lr or check the data")
                p.step = step
                p.log_window.add(loss)
                p.eval_window.add(loss)
                self.bar.update(1)
                if info.is_main:
                    self.bookkeep(grad_norm, lr)
        finally:
            self.bar.close()
            if self.log is not None:
                self.log.close()
        if self.ema is not None:
            self.ema.copy_to(self.policy.parameters())
        return TrainResult(self.policy.eval(), self.out_dir, p.step, p.last_loss, p.best_metric, p.best_step)

    def bookkeep(self, grad_norm: torch.Tensor, lr: float) -> None:
        """Rank 0 after each step: pick `best`, write a log row, write periodic and `latest` checkpoints."""
        cfg, p = self.cfg, self.progress
        step = p.step
        p.elapsed_s = self.clock.elapsed()
        evaluate = step % cfg.val_every == 0 or step == cfg.steps
        val, improved = self.select_best() if evaluate else (None, False)
        if step % cfg.log_every == 0 or evaluate:
            loss = p.log_window.mean()
            self.log.write({"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm.item(), "val_loss": val,
                            "samples_per_s": self.clock.lap(step) * cfg.batch_size, "elapsed_s": p.elapsed_s})
            self.bar.set_postfix(loss=f"{loss:.4f}")
            p.last_loss = loss
            p.log_window.reset()
        periodic = step % cfg.ckpt_every == 0
        names = [BEST] if improved else []
        if periodic:
            names.append(f"step_{step:06d}")
        if periodic or step == cfg.steps:
            names.append(LATEST)
        if names:
            self.save(*names)


class _Clock:
    """Wall time over all sessions of a run, and steps/s between log rows."""

    def __init__(self, elapsed_before: float, step: int) -> None:
        self.before = elapsed_before
        self.start = self.lap_time = time.perf_counter()
        self.lap_step = step

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.start

    def lap(self, step: int) -> float:
        """Steps per second since the previous lap (or since the session started)."""
        now = time.perf_counter()
        rate = (step - self.lap_step) / max(now - self.lap_time, 1e-9)
        self.lap_time, self.lap_step = now, step
        return rate


def student_config(run: RunConfig) -> PolicyConfig:
    """The distillation student's config: the teacher's specs and networks with the recipe's consistency head."""
    head = run.policy.head
    if head.name != "consistency" or head.params.get("mode") != "distillation":
        raise ConfigError(f"policy.head: train.teacher needs name = \"consistency\" and params.mode = "
                          f"\"distillation\", got name = {head.name!r}, mode = {head.params.get('mode')!r}")
    return dataclasses.replace(read_policy_config(run.train.teacher), head=head)


def train(run: RunConfig, resume: bool | str = "auto", dataset: Dataset | None = None) -> TrainResult:
    """Train `run.policy` on `run.train.dataset` (or on `dataset`, then without a validation split).

    resume: "auto" continues from `out_dir/checkpoints/latest` when it exists; "never"/False starts fresh
    (refusing an out_dir that already holds checkpoints); True requires `latest`; a path resumes from that
    checkpoint. Under torchrun, `train.batch_size` is the global batch, split evenly across processes.
    """
    if run.train.teacher:
        run = dataclasses.replace(run, policy=student_config(run))
    start_from = _checkpoint_to_resume(Path(run.train.out_dir) / "checkpoints", resume)
    info, device = distributed.setup(run.train.device)
    try:
        trainer = Trainer(run, info, device, dataset)
        if start_from is not None:
            trainer.load(start_from)
        if info.is_main:
            trainer.out_dir.mkdir(parents=True, exist_ok=True)
            write_json(trainer.out_dir / "config.json", to_dict(run))
        result = trainer.fit()
        distributed.barrier(info)  # every rank returns only once rank 0 has written its last checkpoint
        return result
    finally:
        distributed.teardown(info)
