"""scripts/plot_runs.py: learning curves read back from runs' log.csv files."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "plot_runs.py"


def _run(tmp_path: Path, name: str, rows: list[str]) -> Path:
    run = tmp_path / name
    run.mkdir()
    (run / "log.csv").write_text("step,env_steps,eval_return\n" + "\n".join(rows) + "\n")
    return run


def test_plots_every_run_and_names_a_missing_column(tmp_path):
    a = _run(tmp_path, "a", ["1,100,", "2,200,5.0", "3,300,", "4,400,7.5"])
    b = _run(tmp_path, "b", ["1,100,1.0", "2,200,2.0"])
    out = tmp_path / "curves.png"
    done = subprocess.run([sys.executable, str(SCRIPT), f"A={a}", f"B={b}", "--y", "eval_return", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([sys.executable, str(SCRIPT), f"A={a}", "--y", "eval_success", "--out", str(out)],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and str(a / "log.csv") in bad.stderr and "'eval_success'" in bad.stderr
