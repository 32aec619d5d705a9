"""Command-line options of the shield and the executor, shared by ``robopolicy deploy`` and ``robopolicy eval
--hardware`` / ``--shield`` so both commands spell and default them alike. Imports nothing heavy."""

from __future__ import annotations

import argparse


def shield_options(args: argparse.Namespace):
    """The shield options the deploy and eval commands share (see `add_shield_arguments`)."""
    from robopolicy.hal.shield.hardware import ShieldOptions

    return ShieldOptions(margin=args.margin, linear_margin=args.linear_margin, rate_margin=args.rate_margin,
                         workspace_margin=args.workspace_margin, collision=not args.no_collision, qp=args.qp,
                         min_distance=args.min_distance, fallback=args.fallback, servo=not args.no_servo,
                         servo_margin=args.servo_margin)


def add_shield_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--margin", type=float, default=0.05, help="soft position margin inside the hard limits, rad "
                                                              "(default 0.05)")
    p.add_argument("--linear-margin", type=float, default=0.02, help="the same for prismatic joints, m "
                                                                     "(default 0.02)")
    p.add_argument("--rate-margin", type=float, default=None,
                   help="commanded velocity, acceleration and jerk stay this fraction below the limits (default: "
                        "the hardware file's [shield] rate_margin, measured for its controller; else 0.1)")
    p.add_argument("--workspace-margin", type=float, default=None,
                   help="commanded end-effector positions stay this far inside the workspace box, m (default: the "
                        "hardware file's [shield] workspace_margin; else 0.03)")
    p.add_argument("--no-servo", action="store_true",
                   help="skip the servo stage (for MJCFs with position actuators: where the servo carries the joints)")
    p.add_argument("--servo-margin", type=float, default=0.001,
                   help="the servo stage keeps the predicted motion this far inside the hard limits, rad or m "
                        "(default 0.001)")
    p.add_argument("--no-collision", action="store_true", help="skip the collision stage (shadow model contacts)")
    p.add_argument("--min-distance", type=float, default=None,
                   help="closest allowed geom distance, m (default: the hardware file's [shield] min_distance; else 0)")
    p.add_argument("--qp", action="store_true", help="add the QP projection stage (quadprog, else closed form)")
    p.add_argument("--fallback", choices=["decelerate", "hold"], default="decelerate",
                   help="what the shield commands when no safe command exists (default decelerate)")


def add_executor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--watchdog", type=int, default=20, help="control periods without a fresh action before the "
                                                            "arm holds (default 20)")
    p.add_argument("--splice", choices=["replace", "ensemble"], default="replace",
                   help="how a new chunk joins the one running: replace, or temporal ensembling")
    p.add_argument("--replan", choices=["fixed", "adaptive"], default="fixed",
                   help="plan every n_action_steps (fixed) or as the measured latency requires (adaptive)")
    p.add_argument("--realtime", action="store_true",
                   help="run the control loop at real-time priority (SCHED_FIFO) where permitted")
