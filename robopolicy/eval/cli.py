"""``robopolicy eval``: the evaluation protocol from the command line."""

from __future__ import annotations

import argparse
import json

from robopolicy.specs import ConfigError


def _eval(args: argparse.Namespace) -> int:
    from robopolicy.eval.protocol import EvalConfig  # torch and the simulators load only when evaluating
    from robopolicy.eval.run import evaluate_checkpoint

    config = EvalConfig(
        n_episodes=args.episodes, policy_seeds=list(range(args.seeds)), split=args.split, n_envs=args.n_envs,
        n_videos=args.videos,
    )
    if args.hardware:
        if args.shield:
            raise ConfigError("eval: --shield shields a simulated task; --hardware runs on the robot through its own "
                              "shield: pass one of them")
        return _eval_hardware(args, config)
    task, shield = _env_shield(args) if args.shield else (args.task, None)
    if not task:
        raise ConfigError("eval: pass --task NAME (simulation) or --hardware FILE (a robot)")
    expert_kwargs = {"noise": args.expert_noise} if args.checkpoint == "expert" else {}
    result = evaluate_checkpoint(
        args.checkpoint, task, config, args.out, asynchronous=args.asynchronous, device=args.device,
        video_every=args.video_every, compile_mode=args.compile, aot_cache=args.aot_cache, shield=shield,
        **expert_kwargs,
    )
    brief = {k: result[k] for k in ("task", "n_episodes", "return", "length", "latency_ms", "shield") if k in result}
    if "success" in result:
        brief["success"] = result["success"]
    print(json.dumps(brief, indent=1))
    print(f"wrote {args.out}/result.json, summary.png and {len(result['videos'])} video(s)")
    return 0


def _env_shield(args: argparse.Namespace):
    """The task (``--task``, else the hardware file's ``task``) and the shield every simulated env gets."""
    from robopolicy.sim.rendering import select_gl_backend

    select_gl_backend()  # before the shield imports mujoco: the videos need it
    from robopolicy.hal.options import shield_options
    from robopolicy.hal.shield_env import env_shield
    from robopolicy.hal.spec import load_hardware
    from robopolicy.task import load_task

    spec = load_hardware(args.shield)
    task = args.task or spec.task
    if not task:
        raise ConfigError(f"{spec.path}: task: eval --shield needs --task NAME, or a hardware file that names its "
                          "task (task = \"...\")")
    return task, env_shield(args.shield, load_task(task), shield_options(args))


def _eval_hardware(args: argparse.Namespace, config) -> int:
    """The protocol on a robot: executor and shield per episode, an operator for resets and success labels."""
    from robopolicy.sim.rendering import select_gl_backend

    select_gl_backend()  # before shield_options imports the shield (and with it mujoco): cameras need it
    from robopolicy.eval.hardware import ConsoleOperator, NoLabels, SceneOperator, evaluate_on_hardware
    from robopolicy.hal.options import shield_options

    operators = {"console": ConsoleOperator, "scene": SceneOperator, "none": NoLabels}
    result = evaluate_on_hardware(
        args.checkpoint, args.hardware, config, args.out, shield_options(args),
        operators[args.operator]() if args.operator else None, max_steps=args.max_steps, dry_run=args.dry_run,
        record=args.record, device=args.device, backend=args.backend, watchdog_periods=args.watchdog,
        splice=args.splice, replan=args.replan, realtime=args.realtime,
    )
    brief = {k: result[k] for k in ("hardware", "n_episodes", "length", "shield", "aborted") if k in result}
    if "success" in result:
        brief["success"] = result["success"]
    print(json.dumps(brief, indent=1))
    print(f"wrote {args.out}/result.json and summary.png" + (f"; recorded to {args.record}" if args.record else ""))
    return 1 if result["aborted"] else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint (or a task's scripted expert) with the standard protocol",
        description=(
            "Run policy seeds x initial conditions on a task. Initial conditions are environment seeds from the "
            "test range (100000+) unless --split train (0+, the seeds demonstrations are collected on). Writes "
            "result.json (success with a Wilson 95 % CI, returns and lengths with bootstrap CIs, latency, every "
            "episode), summary.png and mp4 videos of the first --videos test seeds."
        ),
    )
    p.add_argument("checkpoint", help="policy checkpoint directory, or 'expert' for the task's scripted expert")
    p.add_argument("--task", help="task name from tasks/ (see `robopolicy tasks`) or a TOML path")
    p.add_argument("--episodes", type=int, default=50, help="initial conditions per policy seed (default 50)")
    p.add_argument("--seeds", type=int, default=3, help="number of policy seeds 0..N-1 (default 3)")
    p.add_argument("--split", choices=["test", "train"], default="test", help="environment seed range")
    p.add_argument("--n-envs", type=int, default=10, help="parallel environments (default 10)")
    p.add_argument("--async", dest="asynchronous", action="store_true",
                   help="subprocess vector env (slower than sync on 2 cores; helps with many cores)")
    p.add_argument("--videos", type=int, default=3, help="rollouts to record as mp4 (default 3)")
    p.add_argument("--video-every", type=int, default=1, help="render every n-th control step in videos")
    p.add_argument("--expert-noise", type=float, default=0.0, help="action noise std for 'expert' (default 0)")
    p.add_argument("--device", default="cpu", help="torch device for the policy (default cpu)")
    p.add_argument("--compile", choices=["none", "torch", "aot"], default="none",
                   help="run inference as deployed: 'torch' (torch.compile) or 'aot' (ahead-of-time snapshot, "
                        "fastest); the first call compiles and is reported apart as latency_ms.first_call "
                        "(default none)")
    p.add_argument("--aot-cache", default=None,
                   help="with --compile aot: folder that keeps the compiled packages for later runs")
    p.add_argument("--out", default="runs/eval", help="output directory (default runs/eval)")
    p.add_argument("--shield", default=None, metavar="HARDWARE",
                   help="hardware name or TOML path: every simulated env's actions go through that robot's shield "
                        "(options below), so the policy is judged as it would be deployed; the task defaults to the "
                        "file's, and result.json counts the interventions (shield, and per episode)")
    _add_hardware_arguments(p)
    p.set_defaults(func=_eval)


def _add_hardware_arguments(p: argparse.ArgumentParser) -> None:
    from robopolicy.hal.options import add_executor_arguments, add_shield_arguments

    hw = p.add_argument_group("on a robot (--hardware): executor and shield, operator prompts, recorded episodes")
    hw.add_argument("--hardware", default=None, help="hardware name or TOML path: evaluate on this robot instead "
                                                     "of --task's simulation (--episodes per --seeds)")
    hw.add_argument("--operator", choices=["console", "scene", "none"], default=None,
                    help="who resets and labels success: a person (console; default for real robots), the "
                         "simulated task scene (scene; default for simulated ones), or nobody (none)")
    hw.add_argument("--max-steps", type=int, default=400, help="control steps per episode (default 400)")
    hw.add_argument("--dry-run", action="store_true", help="read-only backend: commands discarded")
    hw.add_argument("--record", default=None, metavar="DIR", help="append every episode to this zarr dataset")
    hw.add_argument("--backend", default=None, help="override the hardware file's backend (e.g. mock)")
    add_executor_arguments(hw)
    add_shield_arguments(p.add_argument_group("the shield (--hardware or --shield)"))
