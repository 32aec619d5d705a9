"""The same policy, the same protocol, twice: on the simulated task (``robopolicy eval``'s path) and through the
hardware layer (the ``mujoco`` backend hosting the task's scene, presented to the protocol by
``robopolicy.hal.env.BackendVectorEnv``). Same seeds, so the episodes should agree; prints both reports side by
side and writes each one (``result.json`` and ``summary.png``, as ``robopolicy eval`` does) plus a comparison.

Commands through the backend go through the shield, in joint space or, for a task scene commanded in end-effector
deltas (``hardware/panda_lift_sim.toml``), through its end-effector-delta stages.

    .venv/bin/python scripts/eval_hal_sim.py CHECKPOINT|expert [--hardware panda_lift_sim] [--episodes 10]
        [--seeds 1] [--out runs/eval_hal_sim]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from robopolicy.sim.rendering import select_gl_backend

select_gl_backend()  # before anything imports mujoco

from robopolicy.atomic import write_json  # noqa: E402
from robopolicy.eval.plots import plot_summary  # noqa: E402
from robopolicy.eval.protocol import EvalConfig, evaluate  # noqa: E402
from robopolicy.eval.run import evaluate_checkpoint, load_eval_policy  # noqa: E402
from robopolicy.hal.backend import make_backend  # noqa: E402
from robopolicy.hal.env import BackendVectorEnv  # noqa: E402
from robopolicy.hal.shield.hardware import ShieldedBackend, build_shield  # noqa: E402
from robopolicy.hal.spec import load_hardware  # noqa: E402
from robopolicy.task import load_task  # noqa: E402


def through_backend(checkpoint: str, hardware: str, config: EvalConfig, out: Path) -> dict[str, Any]:
    spec = load_hardware(hardware)
    task = load_task(spec.task)
    policy = load_eval_policy(checkpoint, task)
    backend = make_backend(spec, realtime=False)  # not paced in real time: a slow step on a busy CPU is no fault
    backend.connect()
    robot = ShieldedBackend(backend, build_shield(spec))
    env = BackendVectorEnv(robot, policy.config.n_obs_steps, policy.config.n_action_steps)
    try:
        result = evaluate(policy, env, config, has_success=task.has_success, shielded=True)
    finally:
        env.close()
    result.update(task=task.name, hardware=spec.name, checkpoint=checkpoint, faults=env.faults, videos=[])
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "result.json", result, indent=1)
    plot_summary(result, out / "summary.png", f"{spec.name}: {checkpoint}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--hardware", default="panda_lift_sim")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--out", default="runs/eval_hal_sim")
    args = parser.parse_args()
    out = Path(args.out)
    config = EvalConfig(n_episodes=args.episodes, policy_seeds=list(range(args.seeds)), n_envs=1, n_videos=0)
    spec = load_hardware(args.hardware)
    sim = evaluate_checkpoint(args.checkpoint, spec.task, config, out / "sim")
    hal = through_backend(args.checkpoint, args.hardware, config, out / "backend")
    same = sum(a["success"] == b["success"] and a["length"] == b["length"]
               for a, b in zip(sim["episodes"], hal["episodes"]))
    rows = {"simulation (robopolicy eval)": sim, f"backend ({spec.name})": hal}
    print(f"{'path':34s} {'success':>8s} {'95% CI':>15s} {'return':>7s} {'length':>7s}")
    for name, r in rows.items():
        s = r.get("success", {"rate": float("nan"), "ci95": [float("nan")] * 2})
        print(f"{name:34s} {s['rate']:8.2f} {s['ci95'][0]:7.2f}-{s['ci95'][1]:.2f} {r['return']['mean']:7.2f} "
              f"{r['length']['mean']:7.1f}")
    shield = hal["shield"]
    print(f"identical episodes (success and length): {same}/{len(sim['episodes'])}; backend faults: "
          f"{len(hal['faults'])}; shield interventions: {shield['intervened']} in {shield['steps']} steps "
          f"({shield['rate']:.1%}, all episodes)")
    summary = {"checkpoint": args.checkpoint, "hardware": spec.name, "task": spec.task,
               "identical_episodes": same, "n_episodes": len(sim["episodes"]),
               "success": {k: r.get("success") for k, r in rows.items()},
               "return_mean": {k: r["return"]["mean"] for k, r in rows.items()}, "shield": shield}
    write_json(out / "comparison.json", summary, indent=1)
    print(f"wrote {out}/sim, {out}/backend and {out}/comparison.json")


if __name__ == "__main__":
    main()
