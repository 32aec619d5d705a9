"""`robopolicy train`: recipe resolution, --set/--out/--resume, and config errors as exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from robopolicy.cli import main
from robopolicy.policy import Policy
from robopolicy.specs import load_run_config
from robopolicy.train.cli import resolve_config
from robopolicy.train.runlog import read_log

TINY = ["--set", "train.steps=6", "--set", "train.batch_size=16", "--set", "train.ckpt_every=3",
        "--set", "train.log_every=1", "--set", "policy.backbone.hidden_dims=[32, 32]", "--set", "train.progress=false",
        "--set", "train.tensorboard=false"]


def test_builtin_recipe_is_valid_and_builds_a_policy() -> None:
    run = load_run_config(resolve_config("toy_bimodal"))
    assert run.train.dataset == "toy:bimodal"
    Policy(run.policy)


def test_help_shows_an_example_recipe(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "[policy]" in out and "[train]" in out and "--resume" in out and "toy_bimodal" in out


def test_train_runs_and_a_rerun_resumes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "toy_bimodal", "--out", str(out), *TINY]) == 0
    assert "trained 6 steps" in capsys.readouterr().out
    rows = read_log(out / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    # The same command again resumes from checkpoints/latest: nothing left to do, nothing relogged.
    assert main(["train", "toy_bimodal", "--out", str(out), *TINY]) == 0
    assert read_log(out / "log.csv") == rows
    # A longer run continues where the first stopped.
    assert main(["train", "toy_bimodal", "--out", str(out), *TINY, "--set", "train.steps=8"]) == 0
    assert [int(r["step"]) for r in read_log(out / "log.csv")] == list(range(1, 9))
    assert main(["train", "toy_bimodal", "--out", str(out), *TINY, "--resume", "never"]) == 2
    assert "train.out_dir" in capsys.readouterr().err


@pytest.mark.parametrize("override, field", [
    ("train.steps=0", "train.steps"),
    ("train.learning_rate=0.1", "train.learning_rate"),
    ('train.batch_size="big"', "train.batch_size"),
    ("policy.horizon=0", "policy.horizon"),
    ("policy.head.name=nonexistent", "head.name"),
    ("train.dataset=toy:other", "train.dataset"),
])
def test_config_errors_exit_2_naming_the_field(tmp_path: Path, capsys, override: str, field: str) -> None:
    assert main(["train", "toy_bimodal", "--out", str(tmp_path), "--set", override]) == 2
    assert field in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


def test_recipe_file_errors_exit_2(tmp_path: Path, capsys) -> None:
    path = tmp_path / "recipe.toml"
    path.write_text("[train]\nsteps = 10\n")
    assert main(["train", str(path)]) == 2
    assert "policy: required field is missing" in capsys.readouterr().err
    path.write_text("[train\n")
    assert main(["train", str(path)]) == 2
    assert "invalid TOML" in capsys.readouterr().err


def test_missing_config_file_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["train", str(tmp_path / "absent.toml")]) == 2
    assert "absent.toml" in capsys.readouterr().err


def test_task_recipe_resolves_with_the_task_specs_and_overrides() -> None:
    from robopolicy.train.cli import load_config

    run = load_config("task:lift", ["train.steps=7"])
    assert run.train.steps == 7
    assert [o.key for o in run.policy.obs][0] == "object" and run.policy.action.dim == 7
    assert (run.policy.n_obs_steps, run.policy.horizon, run.policy.n_action_steps) == (2, 16, 8)
