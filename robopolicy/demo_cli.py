"""`robopolicy demo` command registration; the work is in `robopolicy.pipeline.demo` (the end-to-end main job)
and `robopolicy.demo` (the toy head comparison, `--toy`), imported when the command runs."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
The whole stack end to end on the fast manipulation task (push_puck), with nothing to download:

  collect scripted demonstrations -> zarr -> behavior-clone diffusion, flow and 1-step consistency heads on one
  shared encoder -> fine-tune flow with FPO and diffusion with DPPO -> evaluate in simulation (held-out seeds,
  Wilson intervals) -> deploy the best policy through executor and shield on the mujoco backend -> report.

Writes OUT/report.md (results table: success before/after fine-tuning, latency per head, shield interventions),
OUT/results.json, OUT/learning_curves.png, OUT/rollout.mp4, and every run's checkpoints and logs under OUT/runs.
Each stage shows its progress and the ETA of the rest; a failed stage is named with its error, and running the
same command again resumes after the last finished stage (--fresh starts over). About 10 minutes on a 2-core
CPU; --quick runs a 1-2 minute version of the same pipeline.

--toy runs the earlier comparison instead: every head on a bimodal toy task, showing that the generative heads
keep both modes of the demonstrations while a regression head averages them.
"""


def _toy(args: argparse.Namespace) -> int:
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


def _main(args: argparse.Namespace) -> int:
    if args.toy:
        return _toy(args)
    from dataclasses import replace

    from robopolicy.pipeline.demo import QUICK, DemoConfig, run_demo
    from robopolicy.pipeline.stages import StageFailed

    config = replace(QUICK if args.quick else DemoConfig(), seed=args.seed, threads=args.threads)
    out = Path(args.out)
    try:
        run_demo(out, config, fresh=args.fresh)
    except StageFailed as exc:
        print(f"robopolicy demo: error: {exc}")
        return 1
    print((out / "report.md").read_text())
    print(f"wrote {out / 'report.md'}, results.json, learning_curves.png and the rollout video")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="the whole stack end to end on push_puck: demos, BC, fine-tuning, eval, deploy (~10 min CPU)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="robopolicy-demo", help="output folder (default: ./robopolicy-demo)")
    p.add_argument("--quick", action="store_true", help="a 1-2 minute version of the same pipeline")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming after the last finished stage")
    p.add_argument("--toy", action="store_true", help="the toy comparison of every head on a bimodal task instead")
    p.add_argument("--heads", default=None,
                   help="--toy only: comma-separated subset of diffusion,flow,consistency,energy,energy_diffusion,"
                        "regression")
    p.add_argument("--steps", type=int, default=None,
                   help="--toy only: training steps per head at batch 256 (default: per head, see train/toy.py)")
    p.add_argument("--samples", type=int, default=1000, help="--toy only: sampled chunks per head for mode coverage")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: these small networks run fastest single-threaded)")
    p.add_argument("--quiet", action="store_true", help="--toy only: no progress bars")
    p.set_defaults(func=_main)
