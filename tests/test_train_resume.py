"""Exact resume and seeded reproducibility of the BC trainer."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from robopolicy.checkpoint import CheckpointError
from robopolicy.specs import ConfigError, RunConfig, TrainConfig
from robopolicy.train.runlog import read_log
from robopolicy.train.toy import toy_policy_config
from robopolicy.train.trainer import train


def run_config(out: Path, head: str = "diffusion", **train_settings) -> RunConfig:
    settings = dict(out_dir=str(out), steps=24, batch_size=32, lr=1e-3, warmup_steps=4, log_every=1, val_every=8,
                    ckpt_every=12, val_ratio=0.1, progress=False, tensorboard=False)
    return RunConfig(toy_policy_config(head, hidden_dims=[64, 64]), TrainConfig(**{**settings, **train_settings}))


def logged(out: Path, column: str = "loss") -> dict[int, float | None]:
    return {int(r["step"]): r[column] for r in read_log(out / "log.csv")}


def weights(out: Path, name: str = "latest") -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / name / "model.safetensors"))


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """One uninterrupted 24-step run with a validation split (checkpoints at 12 and 24)."""
    out = tmp_path_factory.mktemp("straight")
    train(run_config(out))
    return out


def test_resume_from_a_checkpoint_reproduces_the_uninterrupted_run(straight: Path, tmp_path: Path) -> None:
    result = train(run_config(tmp_path), resume=str(straight / "checkpoints" / "step_000012"))
    reference = logged(straight)
    assert result.step == 24
    assert logged(tmp_path) == {s: reference[s] for s in range(13, 25)}
    assert logged(tmp_path, "val_loss")[24] == logged(straight, "val_loss")[24]
    final, expected = weights(tmp_path), weights(straight)
    assert final.keys() == expected.keys() and any(k.startswith("ema.") for k in final)
    assert all(torch.equal(final[k], expected[k]) for k in final)  # raw and EMA weights, bit for bit


def test_auto_resume_after_a_crash_drops_rows_logged_after_the_checkpoint(straight: Path, tmp_path: Path) -> None:
    # A crash after step 24 was logged but before the step-24 checkpoint: latest is still step 12.
    shutil.copytree(straight / "checkpoints" / "step_000012", tmp_path / "checkpoints" / "latest")
    shutil.copy(straight / "log.csv", tmp_path / "log.csv")
    train(run_config(tmp_path))
    steps = [int(r["step"]) for r in read_log(tmp_path / "log.csv")]
    assert steps == list(range(1, 25))
    assert logged(tmp_path) == logged(straight)


def test_auto_resume_of_a_finished_run_changes_nothing(straight: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(straight, out)
    result = train(run_config(out))
    assert result.step == 24
    assert logged(out) == logged(straight)
    assert all(torch.equal(v, weights(straight)[k]) for k, v in weights(out).items())


def test_same_seed_same_losses_any_worker_count_and_other_seed_differs(straight: Path, tmp_path: Path) -> None:
    train(run_config(tmp_path / "again", num_workers=1))  # data order is drawn in the main process
    train(run_config(tmp_path / "seed1", seed=1))
    assert logged(tmp_path / "again") == logged(straight)
    assert logged(tmp_path / "seed1") != logged(straight)


def test_flow_head_resumes_exactly(tmp_path: Path) -> None:
    train(run_config(tmp_path / "a", head="flow", steps=12, ckpt_every=6, val_ratio=0.0))
    train(run_config(tmp_path / "b", head="flow", steps=12, ckpt_every=6, val_ratio=0.0),
          resume=str(tmp_path / "a" / "checkpoints" / "step_000006"))
    reference = logged(tmp_path / "a")
    assert logged(tmp_path / "b") == {s: reference[s] for s in range(7, 13)}


def test_resume_errors_name_the_problem(straight: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train.out_dir"):
        train(run_config(straight), resume="never")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(run_config(tmp_path), resume=True)
    other = run_config(tmp_path)
    other.policy.horizon = other.policy.n_action_steps = 8
    with pytest.raises(ConfigError, match="policy"):
        train(other, resume=str(straight / "checkpoints" / "latest"))
    with pytest.raises(CheckpointError, match="use_ema"):
        train(run_config(tmp_path, use_ema=False), resume=str(straight / "checkpoints" / "latest"))
