"""``robopolicy hardware list | check FILE | serve FILE``: robot descriptions and the robot-side server."""

from __future__ import annotations

import argparse
import json
import signal
import threading


def _unit(spec, quantity: str) -> str:
    """The file's unit of a joint quantity: one for all joints, or one per joint."""
    unit = getattr(spec.units, quantity)
    return unit if isinstance(unit, str) else "[" + ", ".join(unit) + "]"


def _summary(spec) -> str:
    lim, ws = spec.limits, spec.workspace
    cams = ", ".join(f"{c.name} {c.width}x{c.height}" for c in spec.cameras) or "none"
    ranges = ", ".join(f"{lo:g}..{hi:g}" for lo, hi in zip(lim.position_lower, lim.position_upper))
    extras = (" (with gripper)" if spec.gripper else "") + (f"; hosts task {spec.task}" if spec.task else "")
    return "\n".join([
        f"{spec.name}: {spec.robot}{' (simulated)' if spec.simulated else ''}",
        f"  joints ({spec.n_joints}): {', '.join(spec.joints)}",
        f"  control: {spec.control_mode} at {spec.control_rate_hz:g} Hz, command {spec.command_dim}-d{extras}",
        f"  limits: position [{ranges}] {_unit(spec, 'position')}",
        f"          velocity {list(lim.velocity)} {_unit(spec, 'velocity')}"
        + (f" (measured: {list(lim.measured_velocity)})" if lim.measured_velocity != lim.velocity else ""),
        f"          acceleration {list(lim.acceleration)} {_unit(spec, 'acceleration')}",
        f"          jerk {list(lim.jerk)} {_unit(spec, 'jerk')}",
        f"          torque {list(lim.torque)} {_unit(spec, 'torque')}",
        f"          source: {lim.source or '-'}",
        f"  workspace ({ws.frame} frame, m): {list(ws.lower)} .. {list(ws.upper)}",
        f"  shield: rate_margin {spec.shield.rate_margin:g}, workspace_margin {spec.shield.workspace_margin:g} m, "
        f"min_distance {spec.shield.min_distance:g} m"
        + (f" ({spec.shield.source})" if spec.shield.source else " (defaults)"),
        f"  end effector: {spec.ee_kind} {spec.ee_site}; base frame: {spec.base_frame}",
        f"  cameras: {cams}",
        f"  model: {spec.mjcf}",
        f"  backend: {spec.backend.name} {spec.backend.settings or ''}",
    ])


def _list(args: argparse.Namespace) -> int:
    from robopolicy.hal.spec import list_hardware, load_hardware

    for name in list_hardware():
        spec = load_hardware(name)
        print(f"{name:18s} {spec.backend.name:8s} {spec.control_mode:15s} {spec.control_rate_hz:6g} Hz  "
              f"{spec.n_joints} joints  {spec.description.split(';')[0]}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from robopolicy.hal.backend import backend_class
    from robopolicy.hal.spec import load_hardware

    spec = load_hardware(args.file)
    backend_class(spec.backend.name)  # an unknown backend name is a ConfigError naming backend.name
    if args.json:
        from robopolicy.specs import to_dict

        print(json.dumps(to_dict(spec), indent=1))
    else:
        print(_summary(spec))
        print("ok")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from robopolicy.hal import link
    from robopolicy.hal.backend import make_backend
    from robopolicy.hal.server import RobotServer
    from robopolicy.hal.spec import load_hardware
    from robopolicy.specs import ConfigError

    spec = load_hardware(args.file)
    name = args.backend or spec.backend.name
    if name == "remote":
        raise ConfigError(f"{spec.path}: backend.name: serve drives a local backend (--backend mock|mujoco|replay)")
    key = link.load_key(args.key_file, args.key_env)
    server = RobotServer(make_backend(spec, name), f"tcp://{args.host}:{args.port}", key=key,
                         insecure_localhost=args.insecure_localhost, heartbeat_misses=args.heartbeat_misses)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        address = server.start()
        print(f"serving {spec.name} ({name} backend) on {address}; "
              f"{'UNAUTHENTICATED (insecure localhost)' if key is None else 'clients must hold the shared key'}",
              flush=True)
        server.serve(stop, args.duration)
    finally:
        server.close()  # the arm ends held and disarmed
    print(json.dumps(dict(server.stats)), flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("hardware", help="robot descriptions (hardware/*.toml) and the robot-side server",
                              description="List and check robot descriptions; serve a local backend to remote "
                                          "clients over the authenticated link.")
    sub = p.add_subparsers(dest="hardware_command", required=True, metavar="SUBCOMMAND")
    p_list = sub.add_parser("list", help="one line per hardware file")
    p_list.set_defaults(func=_list)
    p_check = sub.add_parser("check", help="validate a hardware file and print it (exit 2 on an error)")
    p_check.add_argument("file", help="hardware name (see `robopolicy hardware list`) or TOML path")
    p_check.add_argument("--json", action="store_true", help="print the validated description as JSON")
    p_check.set_defaults(func=_check)
    p_serve = sub.add_parser("serve", help="serve a local backend to remote clients (robot side)",
                             description="Bind to 127.0.0.1 by default. Every client must hold the shared key "
                                         "(--key-file or $ROBOPOLICY_HAL_KEY); without a key the server refuses to "
                                         "start unless --insecure-localhost.")
    p_serve.add_argument("file", help="hardware name or TOML path")
    p_serve.add_argument("--backend", default=None, help="local backend to serve (default: the file's)")
    p_serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p_serve.add_argument("--port", type=int, default=5555, help="TCP port (default 5555)")
    p_serve.add_argument("--key-file", default=None, help="file holding the shared key (mode 600)")
    p_serve.add_argument("--key-env", default="ROBOPOLICY_HAL_KEY", help="environment variable holding the key")
    p_serve.add_argument("--insecure-localhost", action="store_true",
                         help="serve without a key, on 127.0.0.1 only (development)")
    p_serve.add_argument("--heartbeat-misses", type=int, default=5,
                         help="control periods of silence after which the arm holds (default 5)")
    p_serve.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p_serve.set_defaults(func=_serve)
