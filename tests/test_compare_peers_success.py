"""scripts/compare_peers_success.py end to end at a tiny scale, with LeRobot from the test-tools venv."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS_PYTHON = ROOT / ".venv-tools" / "bin" / "python"


@pytest.mark.skipif(not TOOLS_PYTHON.exists(), reason="needs .venv-tools (bash scripts/install_test_tools.sh)")
def test_both_libraries_train_on_the_same_windows_and_are_evaluated_on_the_same_seeds(tmp_path):
    args = ["--steps", "6", "--steps-per-round", "3", "--eval-at", "3", "--demos", "3", "--episodes", "4",
            "--n-envs", "4", "--batch-size", "8", "--inference-steps", "3", "--out", str(tmp_path)]
    subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_peers_success.py"), *args], check=True,
                   capture_output=True, cwd=tmp_path)
    report = json.loads((tmp_path / "compare_peers_success.json").read_text())
    assert report["meta"]["same_windows"] is True
    assert [e["step"] for e in report["evaluations"]] == [3, 6]
    for evaluation in report["evaluations"]:
        assert set(evaluation["results"]) == {"LeRobot diffusion", "ours diffusion"}
        for result in evaluation["results"].values():
            # 4 episodes: the rate is a multiple of 1/4 and its Wilson interval contains it
            assert result["success"] * 4 == int(result["success"] * 4)
            assert result["ci95"][0] <= result["success"] <= result["ci95"][1]
    for name, losses in report["losses"].items():
        assert len(losses) == 6 and all(0 < loss < 10 for loss in losses), name
