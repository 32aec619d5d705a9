#!/usr/bin/env python
"""Learning curves of fine-tuning (or BC) runs read back from their log.csv, one line per run, in one PNG.

    .venv/bin/python scripts/plot_runs.py DPPO=runs/dppo_hopper FPO=runs/fpo_hopper PPO=runs/ppo_hopper \\
        --y eval_return --out docs/img/hopper_finetune.png --title "Hopper-v5: held-out return"

Rows without a value in the --y column (e.g. iterations without an evaluation) are skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robopolicy.eval.plots import plot_learning_curves
from robopolicy.train.runlog import read_log


def curve(run: Path, x: str, y: str) -> tuple[list[float], list[float]]:
    rows = read_log(run / "log.csv")
    if rows and (x not in rows[0] or y not in rows[0]):
        sys.exit(f"plot_runs: {run / 'log.csv'} has no column {x if x not in rows[0] else y!r}; "
                 f"columns: {', '.join(rows[0])}")
    points = [(row[x], row[y]) for row in rows if row[x] is not None and row[y] is not None]
    return [p[0] for p in points], [p[1] for p in points]  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR", help="a run's output directory and its label")
    parser.add_argument("--x", default="env_steps", help="log.csv column on the x axis (default env_steps)")
    parser.add_argument("--y", default="eval_success", help="log.csv column on the y axis (default eval_success)")
    parser.add_argument("--title", default="")
    parser.add_argument("--out", required=True, help="PNG path")
    args = parser.parse_args()
    curves = {}
    for item in args.runs:
        label, sep, run = item.partition("=")
        if not sep:
            sys.exit(f"plot_runs: expected LABEL=RUN_DIR, got {item!r}")
        curves[label] = curve(Path(run), args.x, args.y)
    path = plot_learning_curves(curves, args.out, args.title, args.x.replace("_", " "), args.y.replace("_", " "))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
