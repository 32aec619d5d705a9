"""`scripts/bench_data.py --convert`: conversion throughput and peak memory, measured for every registered input
format from datasets that the real tools wrote (RLDS by tensorflow-datasets, Minari by minari)."""
from __future__ import annotations

import json
import subprocess
import sys

from robopolicy.data.convert import FORMATS
from tests.data_tools import REPO, require_tfds, require_tools


def test_convert_benchmark_reports_every_input_format_with_peak_memory(tmp_path):
    require_tools()
    require_tfds()
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO / "scripts" / "bench_data.py"), "--convert", "--episodes", "1", "--length", "4",
           "--scales", "1", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "frames/s" in proc.stdout and "peak MB" in proc.stdout
    report = json.loads(out.read_text())
    assert report["skipped"] == {}
    rows = report["rows"]
    # Every registered reader, by the format its source summary names (e.g. "zarr v2", "rlds (tfds tfrecord)").
    assert {row["format"].split()[0] for row in rows} == set(FORMATS)
    assert {"zarr v3", "zarr v2"} <= {row["format"] for row in rows}  # ours and diffusion_policy's stores
    for row in rows:
        assert (row["episodes"], row["frames"]) == (1, 4), row
        assert row["frames_per_s"] == row["frames"] / row["seconds"] > 0
        assert row["baseline_mb"] > 0 and row["peak_extra_mb"] >= 0  # read from the child's /proc VmRSS / VmHWM
