"""Helpers for the data tests: where the third-party tools live, and running them or the CLI."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TOOLS_PY = Path(os.environ.get("ROBOPOLICY_TOOLS_VENV", REPO / ".venv-tools")) / "bin" / "python"
TFDS_PY = TOOLS_PY.parent.parent / "tfds" / "bin" / "python"  # tensorflow-datasets, in a venv of its own
ROBOSUITE_DEMOS = Path(os.environ.get("ROBOPOLICY_TEST_DATA", REPO / ".cache" / "test-data")) / "robosuite-1.4.1"
INSTALL_HINT = "run `bash scripts/install_test_tools.sh`"


def require_tools() -> Path:
    if not TOOLS_PY.exists():
        pytest.skip(f"third-party tools (lerobot, minari) absent: {TOOLS_PY} missing; {INSTALL_HINT}")
    return TOOLS_PY


def require_tfds() -> Path:
    if not TFDS_PY.exists():
        pytest.skip(f"tensorflow-datasets absent: {TFDS_PY} missing; {INSTALL_HINT}")
    return TFDS_PY


def require_robosuite_141() -> Path:
    python = TOOLS_PY.parent.parent / "robosuite-1.4.1" / "bin" / "python"
    if not python.exists():
        pytest.skip(f"robosuite 1.4.1 absent: {python} missing; {INSTALL_HINT}")
    return python


def robosuite_demo(name: str) -> Path:
    path = ROBOSUITE_DEMOS / name / "demo.hdf5" if name == "lift" else ROBOSUITE_DEMOS / name
    if not path.exists():
        pytest.skip(f"robosuite 1.4.1 demo files absent ({path}); {INSTALL_HINT}")
    return path


def run_tool(script: str, *args: str, python: Path | None = None) -> None:
    """Run tests/data_tools/<script> with the tools' python (or `python`); fail with its output on error."""
    python = python or require_tools()
    proc = subprocess.run([str(python), str(HERE / script), *args], capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise AssertionError(f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def run_cli(*argv: str) -> int:
    """Run `robopolicy ARGV` through the real entry point, in-process: its exit code (2 for bad input, with the
    message on stderr) is what a user gets."""
    from robopolicy.cli import main

    return main(list(argv))


def convert_fails(tmp_path: Path, capsys: pytest.CaptureFixture, src: Path, *expected: str, extra: tuple = (),
                  command: tuple = ("convert",)) -> str:
    """`robopolicy convert SRC tmp/out/dst.zarr` (or another `command` taking SRC DST) must exit 2, print every
    `expected` text and leave nothing behind."""
    out_dir = tmp_path / "out"
    out_dir.mkdir(exist_ok=True)
    assert run_cli(*command, str(src), str(out_dir / "dst.zarr"), "--no-progress", *extra) == 2
    message = capsys.readouterr().err
    for text in expected:
        assert text in message, message
    assert list(out_dir.iterdir()) == []  # no partial output, no temp files
    return message
