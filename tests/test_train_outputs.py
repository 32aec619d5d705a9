"""What a BC run leaves behind: checkpoints, logs, the LR schedule, best-checkpoint choice, config errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from robopolicy.checkpoint import load_train_state
from robopolicy.policy import Policy
from robopolicy.specs import ConfigError, ObsSpec, RunConfig, TrainConfig, to_dict
from robopolicy.train.runlog import COLUMNS, read_log
from robopolicy.train.toy import BimodalToyDataset, toy_policy_config
from robopolicy.train.trainer import train

LR, WARMUP, STEPS = 1e-3, 5, 30


def run_config(out: Path, **train_settings) -> RunConfig:
    settings = dict(out_dir=str(out), steps=STEPS, batch_size=32, lr=LR, warmup_steps=WARMUP, log_every=1,
                    val_every=5, ckpt_every=10, progress=False, tensorboard=False)
    policy = toy_policy_config("diffusion", hidden_dims=[64, 64])
    return RunConfig(policy, TrainConfig(**{**settings, **train_settings}))


@pytest.fixture(scope="module")
def with_val(tmp_path_factory):
    out = tmp_path_factory.mktemp("with_val")
    run = run_config(out, val_ratio=0.1, tensorboard=True)
    return run, train(run)


def test_checkpoints_are_written_and_load_as_policies(with_val) -> None:
    run, result = with_val
    names = sorted(p.name for p in result.checkpoints.iterdir())
    assert names == ["best", "latest", "step_000010", "step_000020", "step_000030"]
    obs = {"state": torch.zeros(3, 1, 2)}
    for name in names:
        policy = Policy.load(result.checkpoints / name)
        assert to_dict(policy.config) == to_dict(run.policy)
        assert policy.predict_action(obs).shape == (3, 4, 2)
    latest = result.checkpoints / "latest"
    ema, raw = Policy.load(latest), Policy.load(latest, use_ema=False)
    assert any(not torch.equal(a, b) for a, b in zip(ema.parameters(), raw.parameters()))
    # The result holds the EMA weights, as the checkpoint serves them by default.
    assert all(torch.equal(a, b) for a, b in zip(result.policy.parameters(), ema.parameters()))
    assert json.loads((latest / "config.json").read_text())["train"]["steps"] == STEPS


def test_best_is_the_lowest_validation_loss(with_val) -> None:
    _, result = with_val
    rows = read_log(result.out_dir / "log.csv")
    val = {int(r["step"]): r["val_loss"] for r in rows if r["val_loss"] is not None}
    assert sorted(val) == [5, 10, 15, 20, 25, 30]
    best_step = min(val, key=val.get)
    assert (result.best_step, result.best_metric) == (best_step, val[best_step])
    _, meta = load_train_state(result.checkpoints / "best")
    assert meta["progress"]["step"] == best_step


def test_log_csv_tensorboard_and_run_config(with_val) -> None:
    run, result = with_val
    rows = read_log(result.out_dir / "log.csv")
    assert list(rows[0]) == COLUMNS
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 and r["samples_per_s"] > 0 for r in rows)
    elapsed = [r["elapsed_s"] for r in rows]
    assert elapsed == sorted(elapsed)
    assert result.final_loss == rows[-1]["loss"]
    assert list((result.out_dir / "tb").glob("events.out.tfevents.*"))
    assert json.loads((result.out_dir / "config.json").read_text()) == to_dict(run)


def test_lr_warms_up_linearly_then_follows_a_cosine_to_zero(with_val) -> None:
    _, result = with_val
    lrs = [r["lr"] for r in read_log(result.out_dir / "log.csv")]
    for step, lr in enumerate(lrs, start=1):
        done = step - 1  # the lr of step s is set by the s-1 updates before it
        expected = LR * done / WARMUP if done < WARMUP else \
            LR * 0.5 * (1 + math.cos(math.pi * (done - WARMUP) / (STEPS - WARMUP)))
        assert lr == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert max(lrs) == pytest.approx(LR)


def test_without_validation_best_follows_the_smoothed_train_loss(tmp_path: Path) -> None:
    result = train(run_config(tmp_path, steps=20, ckpt_every=20, val_every=5))
    rows = read_log(tmp_path / "log.csv")
    assert all(r["val_loss"] is None for r in rows)
    window_means = {s: sum(r["loss"] for r in rows[s - 5:s]) / 5 for s in (5, 10, 15, 20)}
    best_step = min(window_means, key=window_means.get)
    assert result.best_step == best_step
    assert result.best_metric == pytest.approx(window_means[best_step])
    assert (result.checkpoints / "best").is_dir()


def test_a_dataset_can_be_passed_directly(tmp_path: Path) -> None:
    data = BimodalToyDataset(size=64, horizon=4, action_dim=2, seed=3)
    result = train(run_config(tmp_path, steps=4, ckpt_every=4), dataset=data)
    assert result.step == 4 and (result.checkpoints / "latest").is_dir()


@pytest.mark.parametrize("change, field", [
    (lambda run: setattr(run.policy, "obs", [ObsSpec("joint_pos", (2,))]), "policy.obs"),
    (lambda run: setattr(run.policy, "obs", [ObsSpec("state", (3,))]), r"policy.obs\[state\].shape"),
    (lambda run: setattr(run.train, "batch_size", 5000), "train.batch_size"),
    (lambda run: setattr(run.train, "dataset", "toy:unknown"), "train.dataset"),
])
def test_config_errors_name_the_field(tmp_path: Path, change, field: str) -> None:
    run = run_config(tmp_path)
    change(run)
    with pytest.raises(ConfigError, match=field):
        train(run)


def test_trains_on_a_zarr_store_with_a_validation_split(tmp_path: Path) -> None:
    from robopolicy.data.replay_buffer import ReplayBuffer

    rng = np.random.default_rng(0)
    rb = ReplayBuffer.create(tmp_path / "demos.zarr")
    for _ in range(10):
        sign = rng.choice([-1.0, 1.0])
        rb.add_episode({"state": rng.uniform(-1, 1, (20, 2)).astype(np.float32),
                        "action": (sign + 0.05 * rng.normal(size=(20, 2))).astype(np.float32)})
    rb.close()
    result = train(run_config(tmp_path / "run", dataset=str(tmp_path / "demos.zarr"), val_ratio=0.2, steps=6,
                              val_every=3, ckpt_every=6, batch_size=16))
    val = [r["val_loss"] for r in read_log(tmp_path / "run" / "log.csv") if r["val_loss"] is not None]
    assert len(val) == 2 and result.best_metric == min(val)
    assert Policy.load(result.checkpoints / "best").predict_action({"state": torch.zeros(1, 1, 2)}).shape == (1, 4, 2)
