"""Hardware-layer latency: read + write round trips on the mock, mujoco and remote backends, and the remote
link's sustained command rate on localhost.

Every write goes the deployed way, through the shield (``ShieldedBackend``, joint-limit stages only here, so
the figures are the backends' and the link's); the remote server runs in its own process (``robopolicy hardware
serve``, mock backend) with a throw-away key, as on a robot computer. Prints a table and writes JSON; figures
are noisy on shared CPUs, so compare the ratios to the mock backend taken in the same run.

    .venv/bin/python scripts/bench_hal.py [--iters 500] [--seconds 3] [--out runs/bench_hal.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from robopolicy.sim.rendering import select_gl_backend

select_gl_backend()  # before anything imports mujoco: it picks its GL backend on first import

from _bench import write_report  # noqa: E402

from robopolicy.hal import link  # noqa: E402
from robopolicy.hal.backend import Backend, make_backend  # noqa: E402
from robopolicy.hal.shield.hardware import ShieldedBackend, ShieldOptions, build_shield  # noqa: E402
from robopolicy.hal.spec import HardwareSpec, load_hardware  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def targets(spec: HardwareSpec, n: int) -> np.ndarray:
    """A slow sine around the home pose: well inside every limit, so the shield passes it unchanged."""
    k = np.arange(n)[:, None]
    return np.array(spec.home) + 0.02 * np.sin(0.05 * k + np.arange(spec.n_joints))


def shielded(backend: Backend) -> ShieldedBackend:
    backend.connect()
    backend.arm()
    robot = ShieldedBackend(backend, build_shield(backend.spec, ShieldOptions.joint_only()))
    robot.start()
    return robot


def round_trips(robot: ShieldedBackend, iters: int) -> dict[str, float]:
    """p50/p99/mean of one read + one shielded write, in ms (10 warm-up round trips first)."""
    commands = targets(robot.spec, iters + 10)
    times = []
    for i, command in enumerate(commands):
        t0 = time.perf_counter()
        robot.read()
        robot.send(command)
        if i >= 10:
            times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.median(ms)), "p99_ms": float(np.quantile(ms, 0.99)), "mean_ms": float(ms.mean()),
            "n": len(ms)}


def command_rate(robot: ShieldedBackend, seconds: float) -> dict[str, float]:
    """Shielded writes back to back for ``seconds`` (each waits for the robot side's reply)."""
    commands = targets(robot.spec, 100_000)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        robot.send(commands[n % len(commands)])
        n += 1
    elapsed = time.perf_counter() - start
    return {"commands_per_s": n / elapsed, "commands": n, "seconds": elapsed,
            "faults": [f.value for f in robot.backend.status().faults]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(hardware: str, key: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "robopolicy.cli", "hardware", "serve", hardware, "--backend", "mock", "--port",
         str(port)], env={**os.environ, link.KEY_ENV: key}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, cwd=ROOT)
    line = proc.stdout.readline() if proc.stdout else ""
    if "serving" not in line:
        proc.kill()
        rest = proc.stdout.read() if proc.stdout else ""
        raise RuntimeError(f"the server did not start: {line}{rest}")
    return proc, f"tcp://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=500, help="round trips per backend (default 500)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the command-rate run (default 3)")
    parser.add_argument("--out", default="runs/bench_hal.json")
    args = parser.parse_args()

    spec = load_hardware("panda_sim")
    bare = dataclasses.replace(spec, cameras=[])
    results: dict[str, Any] = {"hardware": spec.name, "iters": args.iters, "round_trip": {}}
    rt = results["round_trip"]
    rt["mock"] = round_trips(shielded(make_backend(bare, "mock")), args.iters)
    mujoco_iters = max(20, args.iters // 5)
    # back-to-back round trips, not paced in real time: no wall-clock faults (a first camera frame on a loaded CPU
    # can take longer than the latency limit)
    robot = shielded(make_backend(bare, "mujoco", realtime=False))
    rt["mujoco"] = round_trips(robot, mujoco_iters)
    robot.backend.close()
    robot = shielded(make_backend(spec, "mujoco", realtime=False))
    rt[f"mujoco + {len(spec.cameras)} cameras 84x84"] = round_trips(robot, max(10, mujoco_iters // 4))
    robot.backend.close()

    key = secrets.token_hex(32)
    with tempfile.TemporaryDirectory() as tmp:
        hw = Path(tmp) / "panda_bench.toml"  # the served robot, without cameras (the frames are mujoco's cost)
        hw.write_text((ROOT / "hardware" / "panda_sim.toml").read_text().split("[[cameras]]")[0]
                      + "[backend]\nname = \"mock\"\n")
        proc, address = start_server(str(hw), key)
        try:
            os.environ[link.KEY_ENV] = key
            remote_spec = load_hardware(hw)
            robot = shielded(make_backend(remote_spec, "remote", address=address))
            rt["remote (mock server, localhost)"] = round_trips(robot, args.iters)
            results["remote_command_rate"] = command_rate(robot, args.seconds)
            robot.backend.close()
        finally:
            proc.terminate()
            proc.wait(10)
            del os.environ[link.KEY_ENV]

    base = rt["mock"]["p50_ms"]
    print(f"{'backend':36s} {'p50 ms':>8s} {'p99 ms':>8s} {'mean ms':>8s} {'x mock p50':>10s}")
    for name, r in rt.items():
        r["x_mock_p50"] = r["p50_ms"] / base
        print(f"{name:36s} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['mean_ms']:8.3f} {r['x_mock_p50']:10.1f}")
    rate = results["remote_command_rate"]
    print(f"\nremote link, sustained shielded commands on localhost: {rate['commands_per_s']:.0f}/s "
          f"({rate['commands']} in {rate['seconds']:.1f} s, faults: {rate['faults'] or 'none'})")
    # the shield per stage and the executor's loop at 10, 50, 200 Hz (scripts/bench_shield.py; the adversarial
    # run lives there too)
    from bench_shield import loop_jitter, print_loop, print_shield, shield_latency

    results["shield"] = shield_latency(spec, args.iters)
    print_shield(results["shield"])
    results["executor_loop"] = loop_jitter(spec, [10.0, 50.0, 200.0], args.seconds)
    print_loop(results["executor_loop"])
    write_report(args.out, results)


if __name__ == "__main__":
    main()
