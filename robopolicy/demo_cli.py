"""`robopolicy demo` command registration; the work is in `robopolicy.demo`, imported when the command runs."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Train every head on the built-in bimodal toy task and show what each one learned.

The generative heads (diffusion, flow, consistency, energy) keep both modes of a bimodal action distribution,
while a plain regression head averages them into an action that no demonstrator ever took. Prints a table and
writes results.json, action_distributions.png and one full training run per head (checkpoints, CSV and
tensorboard logs) into the output folder.
"""


def _main(args: argparse.Namespace) -> int:
    import torch

    from robopolicy.demo import HEADS, format_table, run_demo

    torch.set_num_threads(args.threads)
    heads = list(HEADS) if args.heads is None else [h.strip() for h in args.heads.split(",") if h.strip()]
    unknown = sorted(set(heads) - set(HEADS))
    if unknown:
        raise SystemExit(f"robopolicy demo: error: unknown head(s) {unknown}; choose from {list(HEADS)}")
    rows = run_demo(Path(args.out), heads, args.steps, args.samples, args.seed, not args.quiet)
    print(format_table(rows))
    print(f"\nwrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'action_distributions.png'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="train every head on a toy bimodal task and compare (CPU, a few minutes)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="robopolicy-demo", help="output folder (default: ./robopolicy-demo)")
    p.add_argument("--heads", default=None,
                   help="comma-separated subset of diffusion,flow,consistency,energy,regression (default: all)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per head at batch 256 (default: per head, 200-1500, see train/toy.py)")
    p.add_argument("--samples", type=int, default=1000, help="sampled chunks per head for the mode coverage")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: these tiny networks run fastest single-threaded)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_main)
