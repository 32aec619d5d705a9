"""`robopolicy demo --quick` end to end, as a user runs it: the installed command, from a foreign folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROBOPOLICY = Path(sys.executable).parent / "robopolicy"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("elsewhere")
    proc = subprocess.run([str(ROBOPOLICY), "demo", "--quick", "--out", "demo"], cwd=cwd, capture_output=True,
                          text=True, timeout=900, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                                                       "MUJOCO_GL": "egl", "HOME": str(cwd)})
    return cwd / "demo", proc


def test_quick_demo_writes_the_whole_report(demo_run) -> None:
    out, proc = demo_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    heads = [r["head"] for r in results["results"]]
    assert heads == ["diffusion", "flow", "consistency"]
    for row in results["results"]:
        assert 0.0 <= row["success_bc"]["rate"] <= 1.0 and row["latency_ms_p50"] > 0
    tuned = {r["head"]: r["algo"] for r in results["results"] if r["success_finetuned"] is not None}
    assert tuned == {"flow": "fpo", "diffusion": "dppo"}
    stages = results["stages"]
    for run in ("finetune_flow_fpo", "finetune_diffusion_dppo"):
        assert stages[run]["env_steps"] > 0 and Path(stages[run]["checkpoint"]).is_dir()
    deploy = stages["deploy"]  # through executor and shield on the mujoco backend
    assert deploy["hardware"] == "push_puck_sim" and deploy["episodes"] == 1 and deploy["steps"] > 0
    assert 0 <= deploy["interventions"] <= deploy["steps"] and not deploy["aborted"]
    report = (out / "report.md").read_text()
    assert "| diffusion | dppo |" in report and "| flow | fpo |" in report and "shield interventions" in report
    assert (out / "learning_curves.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "rollout.mp4").stat().st_size > 1000
    assert "ETA for the rest" in proc.stderr


def test_rerun_resumes_after_the_last_finished_stage(demo_run) -> None:
    out, first = demo_run
    assert first.returncode == 0
    proc = subprocess.run([str(ROBOPOLICY), "demo", "--quick", "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = json.loads((out / "stages.json").read_text())["finished"]
    assert proc.stderr.count("done in an earlier run, skipped") == len(stages)
