"""What the benchmark scripts share: their JSON report, written atomically (robopolicy/atomic.py), so an
interrupted run never leaves a half-written file where the README's figures are read from.

Imported as ``_bench`` (scripts/ is on sys.path when a script runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robopolicy.atomic import write_json


def write_report(path: str | Path, results: Any) -> Path:
    """Write ``results`` as JSON to ``path`` (its folder made if needed) and say where."""
    path = Path(path)
    write_json(path, results, indent=1)
    print(f"wrote {path}")
    return path
