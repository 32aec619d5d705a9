"""Constraint-aware sampling: how often the shield has to intervene, and how often the task succeeds, when every
flow step's chunk is projected onto the shield's joint limits (``robopolicy.hal.constrained_sampling``) versus not.

The task: reach a random joint goal on the Panda (a perfectly tracking arm, as the mock backend): goals up to
0.8 rad from a start near home (beyond the limits when the start is near one), and the demonstrating expert moves
30 % faster than the velocity limit and ignores the acceleration limit, so a policy that imitates it asks for
infeasible motion whenever it moves. Success: every joint within 0.1 rad of the goal clipped to the shield's soft
limits at the end of the 40-step episode. A small flow policy is trained
with ``robopolicy train`` on the expert's demonstrations, then both samplers run the same episodes through the
shield (joint stages). Prints a table and writes JSON.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_constrained_sampling.py [--train-steps 3000] [--episodes 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _bench import write_report

from robopolicy.cli import main as cli
from robopolicy.data.replay_buffer import ReplayBuffer
from robopolicy.data.spec import build_attrs
from robopolicy.hal.constrained_sampling import ChunkProjection
from robopolicy.hal.shield.hardware import ShieldOptions, build_shield
from robopolicy.hal.shield_env import sum_counts
from robopolicy.hal.spec import load_hardware
from robopolicy.policy import Policy

SPEC = load_hardware("panda_sim")
LOWER, UPPER = np.array(SPEC.limits.position_lower), np.array(SPEC.limits.position_upper)
VMAX, DT = np.array(SPEC.limits.velocity), SPEC.period_s
EPISODE_STEPS, TOLERANCE = 40, 0.1


def draw_task(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A start within 0.5 rad of home and a goal up to 0.8 rad from it per joint (beyond a limit near one)."""
    start = np.clip(np.array(SPEC.home) + rng.uniform(-0.5, 0.5, len(LOWER)), LOWER + 0.1, UPPER - 0.1)
    return start, start + rng.uniform(-0.8, 0.8, len(start))


def expert_step(q: np.ndarray, goal: np.ndarray) -> np.ndarray:
    return q + np.clip(goal - q, -1.3 * VMAX * DT, 1.3 * VMAX * DT)


def demonstrations(path: Path, episodes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rb = None
    for _ in range(episodes):
        q, goal = draw_task(rng)
        rows = {"joint_position": [], "goal": [], "action": []}
        for _ in range(EPISODE_STEPS):
            action = expert_step(q, goal)
            for key, value in (("joint_position", q), ("goal", goal), ("action", action)):
                rows[key].append(value.astype(np.float32))
            q = action
        episode = {k: np.stack(v) for k, v in rows.items()}
        if rb is None:
            rb = ReplayBuffer.create(path, attrs=build_attrs(episode, ["joint_position", "goal"], fps=1 / DT))
        rb.add_episode(episode)


RECIPE = """
[policy]
obs = [{{ key = "joint_position", shape = [7] }}, {{ key = "goal", shape = [7] }}]
action = {{ dim = 7 }}
n_obs_steps = 1
horizon = 8
n_action_steps = 4
[policy.backbone]
kind = "mlp"
hidden_dims = [256, 256]
[policy.head]
name = "flow"
params = {{ inference_steps = 10 }}
[train]
dataset = "{dataset}"
steps = {steps}
batch_size = 256
lr = 1e-3
warmup_steps = 50
val_ratio = 0.0
log_every = 500
ckpt_every = {steps}
"""


def train(workdir: Path, steps: int, episodes: int) -> Policy:
    dataset = workdir / "reach.zarr"
    demonstrations(dataset, episodes, seed=0)
    recipe = workdir / "reach.toml"
    recipe.write_text(RECIPE.format(dataset=dataset, steps=steps))
    if cli(["train", str(recipe), "--out", str(workdir / "run"), "--resume", "never"]) != 0:
        raise RuntimeError("training failed")
    ckpt = workdir / "run" / "checkpoints" / "last"
    if not ckpt.exists():
        ckpt = sorted((workdir / "run" / "checkpoints").iterdir())[-1]
    return Policy.load(ckpt).eval()


def run_episodes(policy: Policy, episodes: int, constrained: bool, seed: int, shielded: bool = True) -> dict[str, Any]:
    """Synchronous episodes on the perfectly tracking arm; without ``shielded`` the policy's actions are applied
    as they are (the task's own success rate), and the shield only counts what it would have changed."""
    shield = build_shield(SPEC, ShieldOptions.joint_only())
    projection = ChunkProjection(policy, shield, workspace=False)
    rng = np.random.default_rng(seed)
    steps = intervened = successes = 0
    plan_ms = []
    per_episode = []  # the shield's counts restart with every reset
    for ep in range(episodes):
        q, goal = draw_task(rng)
        shield.reset(q)
        torch.manual_seed(ep)
        t = 0
        while t < EPISODE_STEPS:
            obs = {"joint_position": torch.as_tensor(q[None, None], dtype=torch.float32),
                   "goal": torch.as_tensor(goal[None, None], dtype=torch.float32)}
            projection.anchor = shield.motion
            policy.head.step_projection = projection if constrained else None
            t0 = time.perf_counter()
            chunk = policy.predict_action(obs)[0, : policy.config.n_action_steps].numpy().astype(np.float64)
            plan_ms.append((time.perf_counter() - t0) * 1e3)
            for action in chunk:
                step = shield(action)
                q = step.command if shielded else action
                steps += 1
                intervened += step.intervened
                t += 1
        per_episode.append(shield.counts.to_dict())
        target = np.clip(goal, shield.limits.soft_lower, shield.limits.soft_upper)
        successes += bool(np.max(np.abs(q - target)) < TOLERANCE)
    policy.head.step_projection = None
    return {"episodes": episodes, "steps": steps, "intervention_rate": intervened / steps,
            "success_rate": successes / episodes, "plan_ms_p50": float(np.median(plan_ms)),
            "counts": sum_counts(per_episode)}


def run_on_mujoco(policy: Policy, episodes: int, seed: int, realtime: bool = True) -> dict[str, Any]:
    """The same policy deployed: executor (20 Hz, its own inference thread) and the shield (joint stages, as in
    the synchronous runs: random joint goals often lie outside the workspace box) on the simulated Panda (PD joint
    control), the goal handed to the policy with each observation; success as above, on the simulator's measured
    joint positions."""
    import dataclasses

    from robopolicy.hal.executor import Executor
    from robopolicy.hal.policy_adapter import policy_infer
    from robopolicy.hal.session import executor_config, shielded_robot

    spec = dataclasses.replace(SPEC, cameras=[])
    rng = np.random.default_rng(seed)
    successes, reasons, shield_rate = 0, [], []
    with shielded_robot(spec, ShieldOptions.joint_only(), backend="mujoco") as robot:
        infer = policy_infer(policy)
        for ep in range(episodes):
            start, goal = draw_task(rng)
            scene = robot.backend
            if scene.state.value == "faulted":  # the previous episode faulted (its reason is reported)
                scene.recover()
            if scene.state.value == "connected":
                scene.arm()
            scene.reset_scene()
            scene.data.qpos[scene._qadr] = start  # the episode's start pose, as in the reaching task
            scene._target = start.copy()
            torch.manual_seed(ep)

            def with_goal(history: dict[str, np.ndarray], goal=goal) -> np.ndarray:
                goals = np.repeat(goal[None].astype(np.float32), len(history["joint_position"]), 0)
                return infer({**history, "goal": goals})

            config = executor_config(policy, max_steps=EPISODE_STEPS, realtime=realtime)
            report = Executor(robot, with_goal, config).run()
            reasons.append(report.reason)
            shield_rate.append(report.shield["rate"])
            q = scene.read().position
            target = np.clip(goal, robot.shield.limits.soft_lower, robot.shield.limits.soft_upper)
            successes += bool(np.max(np.abs(q - target)) < TOLERANCE)
    return {"episodes": episodes, "success_rate": successes / episodes,
            "intervention_rate": float(np.mean(shield_rate)), "reasons": {r: reasons.count(r) for r in set(reasons)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-steps", type=int, default=3000)
    parser.add_argument("--demos", type=int, default=300)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--mujoco-episodes", type=int, default=10, help="episodes through executor + shield on the "
                                                                        "simulated Panda (real time: 2 s each)")
    parser.add_argument("--out", default="runs/bench_constrained_sampling.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        policy = train(Path(tmp), args.train_steps, args.demos)
    results: dict[str, Any] = {"train_steps": args.train_steps, "demos": args.demos}
    results["no shield (the task itself)"] = run_episodes(policy, args.episodes, False, seed=1, shielded=False)
    for name, constrained in (("plain sampling", False), ("projected every step", True)):
        results[name] = run_episodes(policy, args.episodes, constrained, seed=1)
    print(f"\n{'sampler':28s} {'interventions':>14s} {'success':>8s} {'plan ms p50':>12s}")
    for name in ("no shield (the task itself)", "plain sampling", "projected every step"):
        r = results[name]
        print(f"{name:28s} {r['intervention_rate']:14.1%} {r['success_rate']:8.1%} {r['plan_ms_p50']:12.2f}")
    if args.mujoco_episodes:
        r = results["executor + shield on mujoco"] = run_on_mujoco(policy, args.mujoco_episodes, seed=1)
        print(f"{'executor + shield, mujoco':28s} {r['intervention_rate']:14.1%} {r['success_rate']:8.1%} "
              f"{'':>12s}  ({r['episodes']} episodes, runs ended: {r['reasons']})")
    base = results["plain sampling"]["intervention_rate"]
    results["intervention_ratio"] = results["projected every step"]["intervention_rate"] / base if base else None
    write_report(args.out, results)


if __name__ == "__main__":
    main()
