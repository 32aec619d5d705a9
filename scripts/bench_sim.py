"""Simulator throughput: raw MuJoCo vs our wrapped envs vs vector envs, rendering settings, robosuite.

Prints a table and writes JSON. Figures are noisy on shared CPUs (30-50 % between runs): compare ratios
taken in one run. robosuite is measured only with --robosuite (slow import, ~15 s JIT on a fresh install). --ray adds
push_puck and push_puck_image vector envs hosted in 1 and 2 Ray actors (a local Ray on this machine's cores)
beside the local sync vector env of the same size; --ray-only measures just those.

    .venv/bin/python scripts/bench_sim.py [--robosuite] [--ray | --ray-only] [--seconds 2] [--out runs/bench_sim.json]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _bench import write_report

# importing robopolicy.sim chooses MUJOCO_GL before mujoco loads
from robopolicy.sim import GL_BACKEND, make_env, make_vector_env
from robopolicy.sim.rendering import make_renderer, render
from robopolicy.task import load_task


def rate(fn: Callable[[], int], seconds: float) -> float:
    """Calls ``fn`` (returning the number of steps it took) for ``seconds``; steps per second."""
    fn()  # warm-up
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        steps += fn()
    return steps / (time.perf_counter() - start)


def raw_mujoco(task_name: str, seconds: float) -> float:
    import mujoco

    env = make_env(task_name, chunked=False)
    model, data = env.unwrapped.model, env.unwrapped.data

    def run() -> int:
        mujoco.mj_step(model, data, nstep=100)
        return 100
    r = rate(run, seconds)
    env.close()
    return r


def env_rate(task_name: str, seconds: float, chunked: bool) -> float:
    """Control steps/s of one env; with ``chunked`` through the multistep wrapper (n_action_steps each)."""
    task = load_task(task_name)
    env = make_env(task, chunked=chunked)
    env.reset(seed=0)
    env.action_space.seed(0)
    per_call = task.horizons.n_action_steps if chunked else 1

    def run() -> int:
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
        return info.get("n_steps", per_call) if chunked else 1
    r = rate(run, seconds)
    env.close()
    return r


def vector_rate(task_name: str, n: int, asynchronous: bool, seconds: float, **backend: Any) -> float:
    """Total control steps/s of ``n`` chunked envs (``backend``: make_vector_env's backend options)."""
    task = load_task(task_name)
    env = make_vector_env(task, n, asynchronous=asynchronous, **backend)
    env.reset(seed=list(range(n)))
    env.action_space.seed(0)

    def run() -> int:
        env.step(env.action_space.sample())
        return n * task.horizons.n_action_steps
    r = rate(run, seconds)
    env.close()
    return r


def render_rate(task_name: str, fast: bool, seconds: float, size: int = 84) -> float:
    """Frames/s of one physics step + an 84x84 render with fast or default (pretty) visuals."""
    import mujoco

    env = make_env(task_name, chunked=False)
    model, data = env.unwrapped.model, env.unwrapped.data
    renderer = make_renderer(model, size, size, fast=fast)

    def run() -> int:
        mujoco.mj_step(model, data)
        render(renderer, data)
        return 1
    r = rate(run, seconds)
    renderer.close()
    env.close()
    return r


def robosuite_rates(task_name: str, seconds: float) -> dict[str, float]:
    task = load_task(task_name)
    start = time.perf_counter()
    env = make_env(task, chunked=False)
    env.reset(seed=0)
    env.step(np.zeros(task.action.dim, np.float32))
    first = time.perf_counter() - start
    zero = np.zeros(task.action.dim, np.float32)
    steps = rate(lambda: (env.step(zero), 1)[1], seconds)
    t0 = time.perf_counter()
    for i in range(5):
        env.reset(seed=i)
    reset_s = (time.perf_counter() - t0) / 5
    env.close()
    return {"control_steps_per_s": steps, "build_reset_first_step_s": first, "reset_s": reset_s}


def ray_rows(seconds: float, n: int = 8) -> list[tuple[str, str, float]]:
    """``n`` envs of push_puck (cheap steps: overhead-bound) and push_puck_image (rendering: compute-bound): local
    sync, then Ray with 1 and 2 actors, then local sync again (to see load drift)."""
    import os

    import ray

    # Ray starts its workers at a lower priority (raylet's worker_niceness); on a shared machine they then starve
    # behind other work. Same priority as this process, so that both backends compete alike.
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    rows = []
    for task in ("push_puck", "push_puck_image"):
        rows.append((task, f"sync vector x{n} (total), before Ray", vector_rate(task, n, False, seconds)))
        for workers in (1, 2):
            rate = vector_rate(task, n, False, seconds, backend="ray", ray_workers=workers)
            rows.append((task, f"ray vector x{n}, {workers} worker(s) (total)", rate))
        rows.append((task, f"sync vector x{n} (total), after Ray", vector_rate(task, n, False, seconds)))
    ray.shutdown()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--robosuite", action="store_true", help="also measure robosuite Lift (low-dim and image)")
    parser.add_argument("--ray", action="store_true", help="also measure Ray-hosted vector envs (needs ray)")
    parser.add_argument("--ray-only", action="store_true", help="measure only the Ray rows")
    parser.add_argument("--out", default="runs/bench_sim.json")
    args = parser.parse_args()
    s = args.seconds
    rows: list[tuple[str, str, float]] = ray_rows(s) if args.ray or args.ray_only else []
    for task in () if args.ray_only else ("hopper", "walker2d", "halfcheetah", "push_puck"):
        rows.append((task, "raw mj_step", raw_mujoco(task, s)))
        rows.append((task, "env (single actions)", env_rate(task, s, chunked=False)))
        rows.append((task, "env + multistep wrapper", env_rate(task, s, chunked=True)))
        rows.append((task, "sync vector x8 (total)", vector_rate(task, 8, False, s)))
        rows.append((task, "async vector x8 (total)", vector_rate(task, 8, True, s)))
    if not args.ray_only:
        rows.append(("push_puck_image", "env + multistep, 84x84 obs", env_rate("push_puck_image", s, chunked=True)))
    for task in () if args.ray_only else ("hopper", "push_puck"):
        rows.append((task, "step + render 84x84, default visuals (frames/s)", render_rate(task, False, s)))
        rows.append((task, "step + render 84x84, fast visuals (frames/s)", render_rate(task, True, s)))
    if args.robosuite:
        for task in ("lift", "lift_image"):
            r = robosuite_rates(task, s)
            rows.append((task, "robosuite control steps/s", r["control_steps_per_s"]))
            rows.append((task, "robosuite build+reset+first step (s)", r["build_reset_first_step_s"]))
            rows.append((task, "robosuite reset (s, hard_reset=False)", r["reset_s"]))
    print(f"MUJOCO_GL={GL_BACKEND}")
    print(f"{'task':16s} {'measurement':48s} {'steps/s':>10s}")
    for task, what, value in rows:
        print(f"{task:16s} {what:48s} {value:10.1f}")
    write_report(args.out, {"gl_backend": GL_BACKEND, "rows": [
        {"task": t, "measurement": w, "value": v} for t, w, v in rows]})


if __name__ == "__main__":
    main()
