"""The `robopolicy` entry point: help, the demo job end to end (tiny), and error exits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robopolicy.cli import build_parser, main


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "train", "convert", "data", "tasks", "collect", "eval"):
        assert f"    {command}" in out


def test_every_command_has_its_own_help() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, sub in commands.items():
        assert sub.format_help().strip(), name


def test_demo_writes_table_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--toy", "--out", str(tmp_path), "--heads", "flow,regression", "--steps", "20",
                 "--samples", "50", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "flow" in out and "regression" in out and "between" in out
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [r["head"] for r in rows] == ["flow", "regression"]
    for r in rows:
        assert r["steps"] == 20 and abs(r["plus"] + r["minus"] + r["between"] - 1) < 1e-9 and r["latency_ms"] > 0
        assert Path(r["checkpoint"]).is_dir()
    png = (tmp_path / "action_distributions.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_demo_rejects_unknown_heads(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown head"):
        main(["demo", "--toy", "--out", str(tmp_path), "--heads", "nope"])


def test_config_errors_exit_2_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('[policy]\nobs = [{key = "s", shape = [2]}]\naction = {dim = 0}\n')
    assert main(["train", str(recipe)]) == 2
    assert "action.dim" in capsys.readouterr().err
