"""Acceptance: every head keeps both modes of a bimodal action distribution; a regressor averages them.

Each head is trained through the real BC trainer on the built-in toy task (the chunk is +1 or -1
everywhere with equal odds, independent of the observation) and sampled 1,000 times.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robopolicy.policy import Policy
from robopolicy.specs import HeadConfig, RunConfig, TrainConfig
from robopolicy.train.toy import TOY_RECIPES, BimodalToyDataset, mode_coverage, toy_policy_config
from robopolicy.train.trainer import train


def fit(head: str, steps: int, params: dict, out: Path, teacher: str | None = None) -> Policy:
    run = RunConfig(policy=toy_policy_config(head, head_params=params),
                    train=TrainConfig(out_dir=str(out), steps=steps, batch_size=256, lr=1e-3, warmup_steps=steps // 10,
                                      log_every=steps, val_every=steps, ckpt_every=steps, tensorboard=False,
                                      progress=False, teacher=teacher))
    train(run, resume="never", dataset=BimodalToyDataset(seed=0))
    return Policy.load(out / "checkpoints" / "latest")


def coverage(policy: Policy) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    obs = {"state": torch.rand(1000, 1, 2, generator=g) * 2 - 1}
    return mode_coverage(policy.predict_action(obs, generator=g))


@pytest.mark.parametrize("head", ["diffusion", "flow", "consistency", "energy", "energy_diffusion"])
def test_generative_heads_cover_both_modes(head: str, tmp_path: Path) -> None:
    steps, params = TOY_RECIPES[head]
    cov = coverage(fit(head, steps, params, tmp_path))
    assert 0.3 <= cov["plus"] <= 0.7, cov
    assert 0.3 <= cov["minus"] <= 0.7, cov
    assert cov["between"] < 0.1, cov


def test_mse_regressor_lands_between_the_modes(tmp_path: Path) -> None:
    steps, params = TOY_RECIPES["regression"]
    cov = coverage(fit("regression", steps, params, tmp_path))
    assert cov["between"] > 0.9, cov


def test_consistency_distillation_through_the_trainer(tmp_path: Path) -> None:
    teacher = fit("flow", *TOY_RECIPES["flow"], tmp_path / "teacher")
    student = fit("consistency", 1000, {"mode": "distillation"}, tmp_path / "student",
                  teacher=str(tmp_path / "teacher" / "checkpoints" / "latest"))
    assert student.config.head == HeadConfig("consistency", {"mode": "distillation"})
    # the student reuses the teacher's normalizer (and encoder), and its checkpoint holds no teacher weights
    torch.testing.assert_close(student.normalizer.state_dict(), teacher.normalizer.state_dict())
    assert not any("teacher" in k for k in student.state_dict())
    cov = coverage(student)
    assert cov["plus"] > 0.2 and cov["minus"] > 0.2 and cov["between"] < 0.2, cov
