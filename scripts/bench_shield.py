"""Shield and executor figures, and the adversarial run (``scripts/bench_hal.py`` includes the first two).

- shield latency per step and per stage (joint stages only, + workspace, + collision, + QP) on the Panda;
- the executor's loop on the mock backend at 10, 50 and 200 Hz: achieved rate, jitter (p50/p99/max),
  overruns, observation-to-command latency;
- adversarial: 16-step chunks of random, bang-bang, huge, non-finite and square-wave commands (half-periods of 1
  to 10 steps, where servos resonate) through the shield into the mock arm (as fast as the CPU allows, up to
  ``--adversarial-steps`` or ``--adversarial-seconds``), into push_puck's pusher on the mujoco backend (the
  task's scene, the default shield: sim-in-the-loop episodes) and into the simulated arms (``--arms``: the
  MuJoCo Panda and UR5e under the backend's PD, the Panda in robosuite's Lift under its OSC controller; the full
  shield with each hardware file's ``[shield]`` margins, and with any ``--margins`` given).
  Violations are counted in the backend's own state: on mock, positions beyond the hard limits and velocities /
  accelerations / jerks beyond theirs (finite differences of the arm's positions at the control period); on the
  pusher, MuJoCo's qpos beyond the hard limits at *every simulator step* (its control callback), measured
  velocities beyond the file's ``measured_velocity`` and the end effector outside the workspace box; on the
  arms, positions, measured velocities beyond the velocity limits, the end effector outside the workspace and
  disallowed contacts in the simulator's own model. A reading the shield faults on ends the episode and counts.

Targets (issue "Constraint shield and executor"): shield < 1 ms per step without collision checking and < 5 ms
with it; jitter p99 < 2 ms at 50 Hz; zero violations. Prints tables and writes JSON.

    .venv/bin/python scripts/bench_shield.py [--parts shield loop adversarial] [--adversarial-steps 1000000]
        [--adversarial-seconds 600] [--pusher-episodes 40] [--adversarial mock pusher arms]
        [--arms panda_sim ur5e_sim panda_lift_sim] [--mujoco-episodes 5] [--margins 0.1,0.03,0 ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from typing import Any

import numpy as np

from robopolicy.sim.rendering import select_gl_backend

select_gl_backend()  # before anything imports mujoco

from _bench import write_report  # noqa: E402

from robopolicy.hal.backend import make_backend  # noqa: E402
from robopolicy.hal.executor import Executor, ExecutorConfig, raise_priority  # noqa: E402
from robopolicy.hal.shield import EpisodeCounts, stages  # noqa: E402
from robopolicy.hal.shield.ee_delta import EeDeltaShield  # noqa: E402
from robopolicy.hal.shield.hardware import ShieldedBackend, ShieldOptions, build_shield, margins  # noqa: E402
from robopolicy.hal.shield.kinematics import collision_stage, workspace_stage  # noqa: E402
from robopolicy.hal.spec import HardwareSpec, load_hardware  # noqa: E402

SHIELDS = {
    "joint stages": ShieldOptions.joint_only(),
    "+ workspace (FK)": ShieldOptions(collision=False),
    "+ collision": ShieldOptions(),
    "+ collision + QP": ShieldOptions(qp=True),
}


def realistic_commands(spec: HardwareSpec, n: int, seed: int = 0) -> np.ndarray:
    """A policy-like stream: a slow sweep around home with noise, now and then a jump beyond the limits."""
    rng = np.random.default_rng(seed)
    k = np.arange(n)[:, None]
    cmds = np.array(spec.home) + 0.4 * np.sin(0.02 * k + np.arange(spec.n_joints)) + rng.normal(0, 0.02, (n, 7))
    jumps = rng.random(n) < 0.05
    cmds[jumps] += rng.normal(0, 2.0, (int(jumps.sum()), spec.n_joints))
    return cmds


def shield_latency(spec: HardwareSpec, iters: int) -> dict[str, Any]:
    """Mean / p99 microseconds per shielded step for each configuration, and per stage on the full one; at
    real-time priority where permitted (as the control thread runs it with ``--realtime``)."""
    restore = raise_priority()
    try:
        return _shield_latency(spec, iters) | {"realtime_priority": restore is not None}
    finally:
        if restore is not None:
            restore()


def _shield_latency(spec: HardwareSpec, iters: int) -> dict[str, Any]:
    commands = realistic_commands(spec, iters)
    out: dict[str, Any] = {"per_step_us": {}, "per_stage_us": {}}
    for name, options in SHIELDS.items():
        shield = build_shield(spec, options)
        shield.reset(np.array(spec.home))
        times = np.empty(iters)
        for i, command in enumerate(commands):
            t0 = time.perf_counter()
            shield(command)
            times[i] = time.perf_counter() - t0
        us = times * 1e6
        out["per_step_us"][name] = {"mean": float(us.mean()), "p50": float(np.median(us)),
                                    "p99": float(np.quantile(us, 0.99)), "intervened": shield.counts.intervened}
    shield = build_shield(spec, ShieldOptions())
    shield.reset(np.array(spec.home))
    lim, ws, shadow = shield.limits, shield.config.workspace, shield.shadow
    timed = {
        "schema": lambda c, m: stages.schema(c, m),
        **{name: _bound(stages.clip_stage(name), lim) for name in stages.enabled_bounds(lim)},
        "workspace (FK)": lambda c, m: workspace_stage(c, m, shadow, ws),
        "collision": lambda c, m: collision_stage(c, m, shadow),
        "final check": lambda c, m: shield.violations(c, m),
    }
    motions = []
    for command in commands[: min(iters, 500)]:
        motions.append((command, shield.motion))
        shield(command)
    for name, fn in timed.items():
        t0 = time.perf_counter()
        for command, motion in motions:
            fn(command, motion)
        out["per_stage_us"][name] = (time.perf_counter() - t0) / len(motions) * 1e6
    return out


def _bound(stage, lim):
    return lambda command, motion: stage(command, motion, lim)


def sweep_policy(history: dict[str, np.ndarray]) -> np.ndarray:
    q = history["joint_position"][-1]
    return q + 0.002 * np.sin(np.arange(16)[:, None] * 0.3 + np.arange(len(q)))


def busy_policy(history: dict[str, np.ndarray]) -> np.ndarray:
    """The sweep after 4 ms of pure-Python work, which holds the GIL (a policy's Python overhead at its worst)."""
    end = time.perf_counter() + 0.004
    while time.perf_counter() < end:
        sum(range(100))
    return sweep_policy(history)


LOOP_VARIANTS = {  # name: (realtime, policy)
    "": (False, sweep_policy),
    "busy policy": (False, busy_policy),
    "--realtime": (True, sweep_policy),
    "--realtime, busy policy": (True, busy_policy),
}


def loop_jitter(spec: HardwareSpec, rates: list[float], seconds: float) -> dict[str, Any]:
    """The executor on the mock arm at each rate, with a trivial policy (the loop's own cost) and one that holds
    the GIL 4 ms per plan, at normal and at real-time priority. Each row records the 1-minute load average: the
    CPU is shared, and at normal priority the jitter is the OS scheduler's."""
    out = {}
    for variant, (realtime, policy) in LOOP_VARIANTS.items():
        for rate in rates:
            fast = dataclasses.replace(spec, control_rate_hz=rate, cameras=[])
            backend = make_backend(fast, "mock")
            backend.connect()
            backend.arm()
            robot = ShieldedBackend(backend, build_shield(fast, ShieldOptions(collision=False)))
            steps = max(20, int(rate * seconds))
            t0 = time.perf_counter()
            report = Executor(robot, policy, ExecutorConfig(max_steps=steps, realtime=realtime)).run()
            elapsed = time.perf_counter() - t0
            s = report.summary()
            out[f"{rate:g} Hz {variant}".strip()] = {
                "achieved_hz": report.steps / elapsed, "jitter_ms": s["jitter_ms"], "overruns": report.overruns,
                "obs_to_command_ms": s["obs_to_command_ms"], "reason": report.reason,
                "load_average_1min": os.getloadavg()[0], "cpus": os.cpu_count()}
            backend.close()
    return out


CHUNK = 16


def command_bounds(spec: HardwareSpec) -> tuple[np.ndarray, np.ndarray]:
    """What a command's values may span: joint positions (their limits), or an end-effector delta (its per-step
    bounds); a gripper value spans [-1, 1]."""
    if spec.control_mode == "ee_delta":
        hi = np.array(spec.ee_delta.max)  # type: ignore[union-attr]
        lo = -hi
    else:
        lo, hi = np.array(spec.limits.position_lower), np.array(spec.limits.position_upper)
    extra = int(spec.gripper)
    return np.concatenate([lo, -np.ones(extra)]), np.concatenate([hi, np.ones(extra)])


def adversarial_chunks(spec: HardwareSpec, rng: np.random.Generator, n: int) -> np.ndarray:
    """n commands in chunks of CHUNK, each of one kind: uniform beyond the bounds, bang-bang per step, huge,
    NaN/+-inf, or a square wave between beyond-the-bounds extremes (half-periods 1 to 10 steps, random phase per
    component); 3 % of all commands are NaN besides."""
    lo, hi = command_bounds(spec)
    shape = (CHUNK, spec.command_dim)
    chunks = []
    for _ in range(-(-n // CHUNK)):
        kind = int(rng.integers(0, 5))
        if kind == 0:
            chunk = rng.uniform(lo - 1.0, hi + 1.0, shape)
        elif kind == 1:
            chunk = np.where(rng.random(shape) < 0.5, lo - 5, hi + 5)
        elif kind == 2:
            chunk = rng.normal(0, 1e6, shape)
        elif kind == 3:
            chunk = np.where(rng.random(shape) < 0.5, np.nan, np.inf) * rng.choice([-1.0, 1.0], shape)
        else:
            half = int(rng.integers(1, 11))
            phase = (np.arange(CHUNK)[:, None] + rng.integers(0, 2 * half, spec.command_dim)) // half % 2
            chunk = np.where(phase == 0, lo - 1.0, hi + 1.0)
        chunks.append(chunk)
    cmds = np.concatenate(chunks)[:n]
    cmds[rng.random(n) < 0.03] = np.nan
    return cmds


class ViolationCounter:
    """Limits checked on the arm's own positions, sampled once per control period."""

    def __init__(self, spec: HardwareSpec, q0: np.ndarray, tol: float = 1e-6) -> None:
        lim = spec.limits
        self.lo, self.hi = np.array(lim.position_lower), np.array(lim.position_upper)
        self.v, self.a, self.j = np.array(lim.velocity), np.array(lim.acceleration), np.array(lim.jerk)
        self.dt, self.tol = spec.period_s, tol
        self.q, self.dq, self.ddq = q0.copy(), np.zeros_like(q0), np.zeros_like(q0)
        self.counts = {"position": 0, "velocity": 0, "acceleration": 0, "jerk": 0}
        self.max_ratio = dict.fromkeys(self.counts, 0.0)

    def observe(self, q: np.ndarray, held: bool = False) -> None:
        dq = (q - self.q) / self.dt
        ddq = (dq - self.dq) / self.dt
        dddq = (ddq - self.ddq) / self.dt
        tol = self.tol
        pos = max(float(np.max(self.lo - q)), float(np.max(q - self.hi)))
        self.counts["position"] += int(pos > tol or not np.isfinite(q).all())
        # 1 = at a hard limit: the distance from the range's centre over its half width
        centre, half = (self.lo + self.hi) / 2, (self.hi - self.lo) / 2
        self.max_ratio["position"] = max(self.max_ratio["position"], float(np.max(np.abs(q - centre) / half)))
        ratios = {"velocity": np.abs(dq) / self.v, "acceleration": np.abs(ddq) / self.a, "jerk": np.abs(dddq) / self.j}
        for name, ratio in ratios.items():
            worst = float(np.max(ratio))
            if name != "velocity" and held:
                continue  # a hold stops the arm at once: the fallback, exempt from the rate limits by design
            self.max_ratio[name] = max(self.max_ratio[name], worst)
            self.counts[name] += int(worst > 1 + tol)
        self.q, self.dq, self.ddq = q.copy(), (np.zeros_like(dq) if held else dq), (np.zeros_like(ddq) if held else ddq)


def adversarial_mock(spec: HardwareSpec, max_steps: int, seconds: float, seed: int = 0) -> dict[str, Any]:
    """Shielded adversarial commands into the mock arm (joint stages + workspace), as fast as possible."""
    backend = make_backend(dataclasses.replace(spec, cameras=[]), "mock")
    backend.connect()
    backend.arm()
    robot = ShieldedBackend(backend, build_shield(backend.spec, ShieldOptions(collision=False)))
    robot.start()
    rng = np.random.default_rng(seed)
    counter = ViolationCounter(backend.spec, backend.robot.q)
    steps, start, fallbacks = 0, time.perf_counter(), 0
    while steps < max_steps and time.perf_counter() - start < seconds:
        for command in adversarial_chunks(spec, rng, 1000):
            step, _ = robot.send(command)
            counter.observe(backend.robot.q, held=step.fallback == "hold")
            fallbacks += step.fallback is not None
            steps += 1
        backend.robot.log.clear()  # the mock logs every command; keep memory flat over a million steps
    elapsed = time.perf_counter() - start
    backend.close()
    return {"steps": steps, "seconds": elapsed, "steps_per_s": steps / elapsed, "violations": counter.counts,
            "max_ratio_to_limit": counter.max_ratio, "fallbacks": fallbacks}


def adversarial_pusher(episodes: int, steps: int, seed: int = 0) -> dict[str, Any]:
    """Sim-in-the-loop episodes of push_puck's pusher (hardware/push_puck_sim.toml: the task's scene, puck and
    contacts included) under the default shield; MuJoCo's qpos is checked at every simulator step."""
    import mujoco

    spec = load_hardware("push_puck_sim")
    backend = make_backend(spec, "mujoco", realtime=False)  # paced by nothing: as fast as the CPU allows
    backend.connect()
    backend.arm()
    robot = ShieldedBackend(backend, build_shield(spec, ShieldOptions()))
    lo, hi = np.array(spec.limits.position_lower), np.array(spec.limits.position_upper)
    v_hard, ws = np.array(spec.limits.measured_velocity), spec.workspace
    qadr = backend._qadr
    totals = {"position_sim_steps": 0, "velocity_measured": 0, "workspace": 0, "faults": 0}
    seen = {"sim_steps": 0, "min_q": np.inf, "max_q": -np.inf}

    def every_step(model, data) -> None:  # MuJoCo's control callback, before each simulator step
        q = data.qpos[qadr]
        seen["sim_steps"] += 1
        seen["min_q"], seen["max_q"] = min(seen["min_q"], q.min()), max(seen["max_q"], q.max())
        totals["position_sim_steps"] += int((q < lo).any() or (q > hi).any())

    rng = np.random.default_rng(seed)
    n, peak_v, messages, counts = 0, 0.0, [], EpisodeCounts()
    start = time.perf_counter()
    mujoco.set_mjcb_control(every_step)
    try:
        for episode in range(episodes):
            if backend.state.value == "faulted":
                backend.recover()
                backend.arm()
            backend.reset_scene(episode)
            robot.start()
            for obs in shielded_steps(robot, adversarial_chunks(spec, rng, steps), totals, messages):
                n += 1
                q = backend.data.qpos[qadr]  # the state after the period's last simulator step
                totals["position_sim_steps"] += int((q < lo).any() or (q > hi).any())
                peak_v = max(peak_v, float(np.max(np.abs(obs.velocity) / v_hard)))
                totals["velocity_measured"] += int((np.abs(obs.velocity) > v_hard).any())
                totals["workspace"] += int(not ws_contains(ws, obs.ee_position))
            episode_counts = robot.shield.counts
            counts.steps += episode_counts.steps
            counts.intervened += episode_counts.intervened
            counts.by_stage.update(episode_counts.by_stage)
            counts.fallbacks.update(episode_counts.fallbacks)
    finally:
        mujoco.set_mjcb_control(None)
        backend.close()
    elapsed = time.perf_counter() - start
    return {"episodes": episodes, "steps": n, "simulator_steps": seen["sim_steps"], "seconds": elapsed,
            "steps_per_s": n / elapsed, "violations": totals, "pusher_range_m": [seen["min_q"], seen["max_q"]],
            "max_measured_velocity_ratio": peak_v, "shield": counts.to_dict(), "fault_messages": messages}


def shielded_steps(robot: ShieldedBackend, commands, totals: dict[str, int], messages: list[str]):
    """Send each command through the shield and yield the observation after it; a fault (a measured violation)
    ends the episode, counted in ``totals['faults']`` and named in ``messages``."""
    for command in commands:
        try:
            robot.send(command)
            obs = robot.read()
        except Exception as exc:  # noqa: BLE001 - a measured violation faults; counted and named
            totals["faults"] += 1
            messages.append(f"{type(exc).__name__}: {exc}")
            return
        yield obs


def ws_contains(ws, point: np.ndarray) -> bool:
    return bool(np.all(point >= np.array(ws.lower)) and np.all(point <= np.array(ws.upper)))


def adversarial_mujoco(spec: HardwareSpec, episodes: int, steps: int, seed: int = 0,
                       options: ShieldOptions | None = None) -> dict[str, Any]:
    """Adversarial episodes on a simulated arm (the bare model, or a task's scene for a file with ``task``) with
    the full shield; violations in the simulator's state. ``max_workspace_overshoot_m``: how far the measured end
    effector went beyond the box commands are held to (what ``workspace_margin`` must cover)."""
    import mujoco

    bare = dataclasses.replace(spec, cameras=[])
    backend = make_backend(bare, "mujoco", realtime=False)  # paced by nothing: as fast as the CPU allows
    backend.connect()
    backend.arm()
    options = options or ShieldOptions()
    shield = build_shield(bare, options)
    rate_margin, workspace_margin, min_distance = margins(bare, options)
    robot = ShieldedBackend(backend, shield)
    m, d = backend.model, backend.data
    robot_bodies = {int(m.jnt_bodyid[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, backend.prefix + j)])
                    for j in bare.joints}
    joint = shield.joint if isinstance(shield, EeDeltaShield) else shield
    ws = joint.config.hard_workspace  # the hardware file's box (commands are held to a smaller one)
    box_lo, box_hi = joint.config.workspace.lower, joint.config.workspace.upper
    rng = np.random.default_rng(seed)
    totals = {"position": 0, "velocity_measured": 0, "workspace": 0, "self_contact": 0, "faults": 0}
    lo, hi = np.array(bare.limits.position_lower), np.array(bare.limits.position_upper)
    v_limit = np.array(bare.limits.velocity)
    max_v_ratio, overshoot, n, messages = 0.0, 0.0, 0, []
    start = time.perf_counter()
    for episode in range(episodes):
        if backend.state.value == "faulted":
            backend.recover()
            backend.arm()
        elif backend.state.value == "connected":
            backend.arm()
        backend.reset_scene(seed + episode)
        robot.start()
        for obs in shielded_steps(robot, adversarial_chunks(spec, rng, steps), totals, messages):
            n += 1
            q = d.qpos[backend._qadr]
            totals["position"] += int((q < lo - 1e-3).any() or (q > hi + 1e-3).any())
            ratio = float(np.max(np.abs(obs.velocity) / v_limit))
            max_v_ratio = max(max_v_ratio, ratio)
            totals["velocity_measured"] += int(ratio > 1.0)
            totals["workspace"] += int(not ws.contains(obs.ee_position, 0.01))
            overshoot = max(overshoot, float(np.max(np.maximum(box_lo - obs.ee_position, obs.ee_position - box_hi))))
            pairs = {(int(m.geom_bodyid[c.geom1]), int(m.geom_bodyid[c.geom2])) for c in d.contact[: d.ncon]}
            totals["self_contact"] += int(any(
                a in robot_bodies and b in robot_bodies and m.body_parentid[a] != b and m.body_parentid[b] != a
                for a, b in pairs))
    backend.close()
    elapsed = time.perf_counter() - start
    return {"hardware": spec.name, "episodes": episodes, "steps": n, "seconds": elapsed, "steps_per_s": n / elapsed,
            "rate_margin": rate_margin, "workspace_margin": workspace_margin,
            "min_distance": min_distance, "violations": totals,
            "max_measured_velocity_ratio": max_v_ratio, "max_workspace_overshoot_m": overshoot,
            "fault_messages": messages}


def print_shield(result: dict[str, Any]) -> None:
    print(f"\n{'shield configuration':26s} {'mean us':>9s} {'p50 us':>9s} {'p99 us':>9s} {'x joint':>8s}")
    base = result["per_step_us"]["joint stages"]["mean"]
    for name, r in result["per_step_us"].items():
        print(f"{name:26s} {r['mean']:9.1f} {r['p50']:9.1f} {r['p99']:9.1f} {r['mean'] / base:8.1f}")
    print(f"\n{'stage (full shield)':26s} {'us / call':>9s}")
    for name, us in result["per_stage_us"].items():
        print(f"{name:26s} {us:9.1f}")


def print_loop(result: dict[str, Any]) -> None:
    print(f"\n{'executor on mock':30s} {'achieved':>9s} {'jitter p50':>11s} {'p99':>7s} {'max':>7s} {'overruns':>9s} "
          f"{'obs->cmd p50':>13s} {'p99':>7s}  (ms) {'load':>5s}")
    for name, r in result.items():
        j, o = r["jitter_ms"], r["obs_to_command_ms"]
        print(f"{name:30s} {r['achieved_hz']:9.1f} {j['p50']:11.3f} {j['p99']:7.3f} {j['max']:7.3f} "
              f"{r['overruns']:9d} {o['p50']:13.3f} {o['p99']:7.3f}       {r['load_average_1min']:5.2f}")


def print_adversarial(runs: dict[str, dict[str, Any]]) -> None:
    print(f"\n{'adversarial run':44s} {'episodes':>8s} {'steps':>9s} {'seconds':>8s} {'steps/s':>8s} "
          f"{'violations':>10s}  by kind")
    for name, r in runs.items():
        v = r["violations"]
        print(f"{name:44s} {r.get('episodes', '-'):>8} {r['steps']:9d} {r['seconds']:8.1f} {r['steps_per_s']:8.0f} "
              f"{sum(v.values()):10d}  {v}")


def _margins(text: str) -> tuple[float, float, float]:
    rate, workspace, distance = (float(v) for v in text.split(","))
    return rate, workspace, distance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=["shield", "loop", "adversarial"],
                        default=["shield", "loop", "adversarial"])
    parser.add_argument("--iters", type=int, default=2000, help="shielded steps per latency figure")
    parser.add_argument("--loop-seconds", type=float, default=5.0, help="seconds of executor loop per rate")
    parser.add_argument("--adversarial-steps", type=int, default=1_000_000, help="mock run: at most this many steps")
    parser.add_argument("--adversarial-seconds", type=float, default=600.0, help="mock run: at most this long")
    parser.add_argument("--pusher-episodes", type=int, default=40)
    parser.add_argument("--pusher-steps", type=int, default=200)
    parser.add_argument("--adversarial", nargs="+", choices=["mock", "pusher", "arms"],
                        default=["mock", "pusher", "arms"], help="which adversarial runs (default all)")
    parser.add_argument("--arms", nargs="+", default=["panda_sim", "ur5e_sim", "panda_lift_sim"],
                        help="simulated arms (hardware files) for the 'arms' run")
    parser.add_argument("--margins", nargs="*", default=[], type=_margins, metavar="RATE,WORKSPACE,DISTANCE",
                        help="extra arm runs with these rate and workspace margins and minimum distance (the "
                             "file's are always run)")
    parser.add_argument("--mujoco-episodes", type=int, default=5, help="episodes per simulated arm and margins")
    parser.add_argument("--mujoco-steps", type=int, default=200)
    parser.add_argument("--mujoco-seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_shield.json")
    args = parser.parse_args()

    spec = load_hardware("panda_sim")
    results: dict[str, Any] = {"hardware": spec.name, "parts": args.parts}
    if "shield" in args.parts:
        results["shield"] = shield_latency(spec, args.iters)
        print_shield(results["shield"])
    if "loop" in args.parts:
        results["loop"] = loop_jitter(spec, [10.0, 50.0, 200.0], args.loop_seconds)
        print_loop(results["loop"])
    if "adversarial" in args.parts:
        runs = results["adversarial"] = {}
        if "mock" in args.adversarial:
            runs["mock panda_sim (joint stages + workspace)"] = adv = adversarial_mock(
                spec, args.adversarial_steps, args.adversarial_seconds)
            print(f"\nmock: max ratio to limit {({k: round(v, 3) for k, v in adv['max_ratio_to_limit'].items()})}, "
                  f"fallbacks {adv['fallbacks']}")
        if "pusher" in args.adversarial:
            runs["mujoco push_puck_sim (default shield)"] = pusher = adversarial_pusher(args.pusher_episodes,
                                                                                       args.pusher_steps)
            print(f"pusher: {pusher['simulator_steps']} simulator steps checked, qpos range "
                  f"{pusher['pusher_range_m']} m (hard limits +-0.25), max measured |v| / measured_velocity "
                  f"{pusher['max_measured_velocity_ratio']:.3f}, shield {pusher['shield']}")
        if "arms" in args.adversarial:
            # the simulated arms' PD (or robosuite's controller) is outside the model, so there is no servo stage:
            # the hardware file's [shield] margins must cover its lag and overshoot; --margins adds runs with others
            variants = {"file's margins": ShieldOptions()} | {
                f"rate_margin {rm:g}, workspace_margin {wm:g}, min_distance {md:g}":
                    ShieldOptions(rate_margin=rm, workspace_margin=wm, min_distance=md) for rm, wm, md in args.margins}
            for arm in args.arms:
                arm_spec = load_hardware(arm)
                for name, options in variants.items():
                    mj = adversarial_mujoco(arm_spec, args.mujoco_episodes, args.mujoco_steps, args.mujoco_seed,
                                            options)
                    runs[f"mujoco {arm} (full shield, {name})"] = mj
                    print(f"{arm}, {name} (rate {mj['rate_margin']:g}, workspace {mj['workspace_margin']:g} m, "
                          f"distance {mj['min_distance']:g} m): "
                          f"max measured |v| / limit {mj['max_measured_velocity_ratio']:.3f}, end effector up to "
                          f"{mj['max_workspace_overshoot_m'] * 100:.1f} cm past the commanded box; "
                          f"faults: {mj['fault_messages'][:3]}")
        print_adversarial(runs)
    write_report(args.out, results)


if __name__ == "__main__":
    main()
