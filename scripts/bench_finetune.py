"""RL fine-tuning benchmark on push_puck: learning from a weak BC policy, and throughput.

1. A deliberately weak BC policy per head (few demos, few steps; `BC_HEADS`), evaluated on 50 held-out seeds.
2. The raw vector-env step rate (random 8-step chunks, same-step autoreset, as many envs as the runs use),
   measured in this process, as the baseline for the iterations' env-steps/s.
3. One `robopolicy finetune` run per row of `ROWS` on the same env-step budget: DPPO from the weak BC diffusion
   policy, Gaussian PPO from scratch. Rows are (name, algo, start, overrides); another algorithm x head is one
   more row (and, for a new head, one more `BC_HEADS` entry). Runs live in OUT/<row>; an already finished run
   is read back, not run again (the runner resumes and finds nothing left), so rows can be added later.
4. A table (final and best held-out success, env steps, env-steps/s of whole iterations against the raw
   rate, the split of iteration time into env / policy / update), JSON, and the learning curves in one PNG.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/bench_finetune.py [--iterations 400] [--out DIR]
    .venv/bin/python scripts/bench_finetune.py --quick      # a smoke run of every stage (a minute)
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _bench import write_report

TASK = "push_puck"


@dataclass
class Row:
    name: str
    algo: str
    start: str  # a BC_HEADS name (its weak BC checkpoint) or "scratch"
    overrides: list[str] = field(default_factory=list)  # --set style, on top of the row's recipe
    recipe: str = ""  # a built-in recipe name; "": the algorithm's push_puck recipe


ROWS = [
    Row("dppo_diffusion", "dppo", "diffusion"),
    # DPPO with PPO-style per-step log-probs (summed, unclamped), a flat clip and only the last 2 steps trained
    Row("dppo_diffusion_sum_k2", "dppo", "diffusion",
        ["params.finetune_steps=2", 'params.log_prob_reduce="sum"', "params.log_prob_clamp=[-1e9, 1e9]",
         "params.clip_base=0.1", "params.clip=0.1", "params.min_std=0.1", "update.actor_lr=1e-4",
         "update.minibatch_size=100"]),
    Row("ppo_scratch", "ppo", "scratch"),
    Row("fpo_flow", "fpo", "flow"),
    Row("fpo_mean_flow", "fpo", "flow", ['params.ratio="mean"']),
    Row("reinflow_flow", "reinflow", "flow"),
    Row("reinflow_consistency", "reinflow", "consistency"),
    Row("fpo_energy", "fpo", "energy"),
    # the diffusion-trained energy through its denoising chain (each step costs a double backward): ReinFlow around
    # a 2-step DDIM sampler, deploying the noise-injected chain at half its std (38.5 % -> 89-94 % on 200 seeds in the
    # recipe's 430 iterations, 32 min alone; the bench runs every row at --iterations),
    # DPPO over the last 3 of its 5 DDPM steps
    Row("reinflow_energy_diffusion", "reinflow", "energy_diffusion", recipe="push_puck_reinflow_energy"),
    Row("dppo_energy_diffusion", "dppo", "energy_diffusion", ["params.finetune_steps=3"]),
]

# weak BC policies: 100 proficient demos, 6000 steps (diffusion: 38 % on the 50 held-out seeds, 44 % over 150
# episodes in an earlier run, 52 % at 8000), the flow head 4000 (34 %; 24 % at 3000, 60 % at 6000), the
# consistency head 4000 (38 %; 24 % at 2000, 54 % at 6000), the diffusion-trained energy head 6000 (34 %), the
# residual FiLM MLP (the plain one stays near 0 % however long it trains, docs/finetuning.md); 16-step chunks of
# which 4 run (50 % at 4, 34 % at 8 for the 8000-step diffusion policy)
BC_DEMOS, BC_STEPS = 100, 6000
BC_HEAD_STEPS = {"flow": 4000, "consistency": 4000}
BC_HEADS: dict[str, dict[str, Any]] = {
    "diffusion": {"name": "diffusion", "params": {"inference_steps": 5, "sampler": "ddim"}},
    "flow": {"name": "flow", "params": {"inference_steps": 4}},
    "consistency": {"name": "consistency", "params": {"inference_steps": 2, "ct_total_steps": BC_STEPS}},
    "energy": {"name": "energy", "params": {"langevin_steps": 30}},
    "energy_diffusion": {"name": "energy_diffusion", "params": {"inference_steps": 5, "sampler": "ddim"}},
}


def bc_recipe(head: dict[str, Any], dataset: str, out_dir: str, steps: int, batch: int) -> dict[str, Any]:
    return {
        "policy": {"obs": [{"key": "state", "shape": [6]}],
                   "action": {"dim": 2, "low": [-0.25, -0.25], "high": [0.25, 0.25]},
                   "n_obs_steps": 2, "horizon": 16, "n_action_steps": 4,
                   "backbone": {"kind": "residual_mlp", "hidden_dims": [512, 512, 512]}, "head": head},
        "train": {"dataset": dataset, "out_dir": out_dir, "steps": steps, "batch_size": batch, "lr": 1e-3,
                  "warmup_steps": 50, "log_every": 100, "val_every": steps, "ckpt_every": steps,
                  "tensorboard": False, "progress": False},
    }


def weak_bc(out: Path, head_name: str, demos: int, steps: int, episodes: int) -> tuple[str, dict[str, Any]]:
    """The weak BC checkpoint for `head_name` (trained once, then reused) and its held-out evaluation."""
    from robopolicy.eval.protocol import EvalConfig, evaluate
    from robopolicy.policy import Policy
    from robopolicy.sim import make_vector_env
    from robopolicy.sim.collect import collect, load_recipe
    from robopolicy.specs import RunConfig, from_dict
    from robopolicy.train.trainer import train

    dataset = out / f"push_puck_{demos}demos.zarr"
    if not dataset.exists():
        recipe = load_recipe("push_puck_proficient")
        recipe.n_episodes = demos
        collect(recipe, str(dataset))
    ckpt = out / f"bc_{head_name}" / "checkpoints" / "latest"
    if not ckpt.exists():
        batch = 256 if demos >= 10 else 32  # --quick's few demos hold fewer samples than a full batch
        run = from_dict(RunConfig, bc_recipe(BC_HEADS[head_name], str(dataset), str(ckpt.parents[1]), steps, batch))
        train(run, resume="never")
    report = out / f"bc_{head_name}_eval.json"
    if not report.exists():
        policy = Policy.load(ckpt)
        env = make_vector_env(TASK, 10, n_obs_steps=policy.config.n_obs_steps,
                              n_action_steps=policy.config.n_action_steps)
        result = evaluate(policy, env, EvalConfig(n_episodes=episodes, policy_seeds=[0], n_envs=10, n_videos=0))
        env.close()
        write_report(report, {"success": result["success"], "return": result["return"]})
    return str(ckpt), json.loads(report.read_text())


def raw_env_rate(n_envs: int, seconds: float) -> float:
    """Env steps/s of the same-step-autoreset vector env driven with random chunks (no policy)."""
    from robopolicy.sim import make_vector_env

    env = make_vector_env(TASK, n_envs, same_step_autoreset=True, n_obs_steps=2, n_action_steps=8)
    env.reset(seed=list(range(n_envs)))
    env.action_space.seed(0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        n_steps = np.asarray(info.get("n_steps", np.zeros(n_envs)))
        done = terminated | truncated
        if done.any():
            n_steps = np.where(done, info["final_info"]["n_steps"], n_steps)
        steps += int(n_steps.sum())
    env.close()
    return steps / (time.perf_counter() - start)


def run_row(row: Row, out: Path, checkpoint: str, iterations: int, quick: list[str]) -> list[dict[str, Any]]:
    from robopolicy.rl.config import load_finetune_config
    from robopolicy.rl.finetune import finetune
    from robopolicy.train.runlog import read_log

    overrides = [*row.overrides, f"iterations={iterations}", "progress=false", *quick]
    config = load_finetune_config(row.recipe or f"{TASK}_{row.algo}", overrides, out_dir=str(out / row.name))
    finetune(config, checkpoint, resume="auto")
    return read_log(out / row.name / "log.csv")


def summarize(rows: list[dict[str, Any]], raw_rate: float) -> dict[str, Any]:
    evals = [(r["env_steps"], r["eval_success"]) for r in rows if r["eval_success"] is not None]
    env_t, pol_t, upd_t = (sum(r[k] for r in rows) for k in ("env_time_s", "policy_time_s", "update_time_s"))
    total = env_t + pol_t + upd_t
    steps = rows[-1]["env_steps"]
    rate = steps / total
    return {
        "iterations": len(rows), "env_steps": int(steps), "final_success": evals[-1][1] if evals else None,
        "best_success": max(e[1] for e in evals) if evals else None, "curve": evals,
        "env_steps_per_s": rate, "raw_env_steps_per_s": raw_rate, "iteration_vs_raw": rate / raw_rate,
        "time_split": {"env": env_t / total, "policy": pol_t / total, "update": upd_t / total},
        "wall_s": rows[-1]["elapsed_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench_finetune")
    parser.add_argument("--iterations", type=int, default=250, help="iterations per row (same env-step budget)")
    parser.add_argument("--rows", default=",".join(r.name for r in ROWS), help="comma-separated row names")
    parser.add_argument("--quick", action="store_true", help="tiny budget: checks every stage runs")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    demos, steps, episodes, iterations = BC_DEMOS, BC_STEPS, 50, args.iterations
    quick: list[str] = []
    if args.quick:
        demos, steps, episodes, iterations = 2, 20, 4, 2
        quick = ["rollout.n_envs=2", "rollout.n_decisions=4", "eval.every=1", "eval.n_episodes=2",
                 "eval.n_envs=2", "tensorboard=false"]
    wanted = [r for r in ROWS if r.name in args.rows.split(",")]
    starts = {r.start for r in wanted} - {"scratch"}
    bc = {head: weak_bc(out, head, demos, steps if args.quick else BC_HEAD_STEPS.get(head, steps), episodes)
          for head in sorted(starts)}
    n_envs = 2 if args.quick else 8
    seconds = 1.0 if args.quick else 3.0
    raw_env_rate(n_envs, 0.2)  # warm-up (first env construction, imports)
    raw = raw_env_rate(n_envs, seconds)
    results: dict[str, Any] = {"task": TASK, "raw_env_steps_per_s": raw, "n_envs": n_envs,
                               "bc": {h: {"checkpoint": c, **e} for h, (c, e) in bc.items()}, "rows": {}}
    for row in wanted:
        checkpoint = "scratch" if row.start == "scratch" else bc[row.start][0]
        log = run_row(row, out, checkpoint, iterations, quick)
        # the machine's load drifts over a run: the raw rate is measured before and after each row, and averaged
        after = raw_env_rate(n_envs, seconds)
        results["rows"][row.name] = {"algo": row.algo, "start": row.start, **summarize(log, (raw + after) / 2)}
        raw = after

    report = out / "bench_finetune.json"  # rows (and BC results) of earlier runs are kept, read just before writing
    if report.exists():
        earlier = json.loads(report.read_text())
        results["rows"] = {**earlier.get("rows", {}), **results["rows"]}
        results["bc"] = {**earlier.get("bc", {}), **results["bc"]}
    print(f"push_puck, {n_envs} envs, raw vector-env rate {raw:,.0f} env-steps/s")
    for head, (_, e) in bc.items():
        print(f"weak BC ({head}): held-out success {e['success']['rate']:.0%} "
              f"[{e['success']['ci95'][0]:.0%}, {e['success']['ci95'][1]:.0%}]")
    header = f"{'row':18s} {'env steps':>10s} {'final':>6s} {'best':>6s} {'steps/s':>8s} {'vs raw':>7s} " \
             f"{'env':>5s} {'policy':>7s} {'update':>7s} {'wall s':>7s}"
    print(header)
    for name, r in results["rows"].items():
        split = r["time_split"]
        final = "-" if r["final_success"] is None else f"{r['final_success']:.0%}"
        best = "-" if r["best_success"] is None else f"{r['best_success']:.0%}"
        print(f"{name:18s} {r['env_steps']:>10,d} {final:>6s} {best:>6s} {r['env_steps_per_s']:>8,.0f} "
              f"{r['iteration_vs_raw']:>7.1%} {split['env']:>5.0%} {split['policy']:>7.0%} {split['update']:>7.0%} "
              f"{r['wall_s']:>7.0f}")
    from robopolicy.eval.plots import plot_learning_curves

    write_report(report, results)
    curves = {name: ([c[0] for c in r["curve"]], [c[1] for c in r["curve"]]) for name, r in results["rows"].items()}
    plot_learning_curves(curves, out / "learning_curves.png", "push_puck: held-out success (50 test seeds)")
    print(f"wrote {out / 'learning_curves.png'}")


if __name__ == "__main__":
    main()
