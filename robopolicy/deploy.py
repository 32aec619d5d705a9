"""``robopolicy deploy CHECKPOINT --hardware hardware/X.toml``: run a policy on a robot through the executor
and the shield; ``--dry-run`` runs the same pipeline on the read-only backend (live readings, commands
discarded) and reports what the shield would have done; ``--record DIR`` writes the run to a zarr dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from robopolicy.hal.options import add_executor_arguments, add_shield_arguments

RUN_OK = ("completed", "stopped")


def _deploy(args: argparse.Namespace) -> int:
    from robopolicy.sim.rendering import select_gl_backend

    select_gl_backend()  # before the shield's shadow model imports mujoco, or the cameras cannot render
    from robopolicy.atomic import write_json
    from robopolicy.hal.executor import Executor
    from robopolicy.hal.options import shield_options
    from robopolicy.hal.policy_adapter import policy_infer
    from robopolicy.hal.recorder import Recorder
    from robopolicy.hal.session import executor_config, shielded_robot
    from robopolicy.hal.spec import load_hardware
    from robopolicy.policy import Policy

    spec = load_hardware(args.hardware)
    policy = Policy.load(args.checkpoint, device=args.device).eval()
    steps = args.steps if args.steps is not None else round(args.duration * spec.control_rate_hz)
    config = executor_config(policy, max_steps=steps, watchdog_periods=args.watchdog, splice=args.splice,
                             replan=args.replan, realtime=args.realtime)
    recorder = Recorder(args.record, spec) if args.record else None
    try:
        with shielded_robot(spec, shield_options(args), dry_run=args.dry_run, backend=args.backend,
                            policy=policy) as robot:
            report = Executor(robot, policy_infer(policy, args.device), config, recorder=recorder).run()
            status = robot.backend.status().to_dict()
            log = [{"raw": s.raw.tolist(), "shielded": s.command.tolist(), "fallback": s.fallback,
                    "interventions": [[i.stage, i.amount, i.note] for i in s.interventions]}
                   for s in list(robot.shield.log)[-200:]]
    finally:
        if recorder is not None:
            recorder.close()
    summary = {"hardware": spec.name, "checkpoint": args.checkpoint, "dry_run": args.dry_run,
               "backend": status, **report.summary(), "shield_log_tail": log}
    out = Path(args.out)
    write_json(out / "deploy.json", summary, indent=1)
    brief = {k: summary[k] for k in ("reason", "detail", "steps", "overruns", "held", "shield")}
    print(json.dumps(brief, indent=1))
    print(f"wrote {out / 'deploy.json'}" + (f" and recorded to {args.record}" if args.record else ""))
    return 0 if report.reason in RUN_OK else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "deploy", help="run a policy on a robot through the executor and the constraint shield",
        description="Policy -> Executor -> Shield -> Backend at the hardware file's control rate, until --steps or "
                    "--duration, a fault, the watchdog or Ctrl-C (e-stop). The arm is held and disarmed at the end. "
                    "Exit 0 when the run completed, 1 when it ended in a fault, watchdog or e-stop.")
    p.add_argument("checkpoint", help="policy checkpoint directory")
    p.add_argument("--hardware", required=True, help="hardware name (robopolicy hardware list) or TOML path")
    p.add_argument("--dry-run", action="store_true",
                   help="read-only backend: live readings, commands discarded; reports what the shield would do")
    p.add_argument("--record", default=None, metavar="DIR", help="append the run to this zarr dataset")
    p.add_argument("--backend", default=None, help="override the file's backend (e.g. mock)")
    p.add_argument("--steps", type=int, default=None, help="control steps to run (default: --duration)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds to run (default 10)")
    p.add_argument("--out", default="runs/deploy", help="report folder (default runs/deploy)")
    p.add_argument("--device", default="cpu", help="torch device for the policy (default cpu)")
    add_shield_arguments(p)
    add_executor_arguments(p)
    p.set_defaults(func=_deploy)
