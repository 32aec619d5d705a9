#!/usr/bin/env python
"""Success side by side with LeRobot on push_puck (state), in one run: the same demonstrations, the same training
windows in the same order, the same UNet, then both policies through robopolicy's evaluation protocol.

LeRobot's DiffusionPolicy (in .venv-tools, made by scripts/install_test_tools.sh) and our diffusion head share the
configuration of scripts/compare_peers.py (1-D conditional UNet with down_dims 64,128,256, kernel 5, 8 groups,
128-d step embedding; horizon 16, 2 observation steps, 8 executed actions; DDPM with 100 train timesteps, sampled
with all 100) on push_puck's state (pusher, puck and goal xy) instead of the 84x84 camera: an image policy needs
hours of CPU training to succeed (docs/peers.md), a state policy minutes. Each library trains as it does itself
(LeRobot: its Adam preset and cosine schedule, no EMA; ours: `robopolicy train`'s AdamW, cosine and EMA) at the
same learning rate and batch size, the two processes alternating turns so both see the same machine load. Each
is then evaluated on the same held-out seeds (push_puck's test split) by `robopolicy.eval.protocol.evaluate`
through a proxy that sends observation histories to the policy's process and executes the chunks it returns.

    .venv/bin/python scripts/compare_peers_success.py [--steps 5000] [--batch-size 256] [--demos 100]
        [--episodes 50] [--eval-at 2500,5000] [--inference-steps 100] [--threads 1] [--out runs/peers_success]

Writes OUT/compare_peers_success.json and prints a table (success with Wilson 95 % intervals per evaluation).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from compare_peers import LEROBOT, TOOLS_PYTHON, UNET, Side, check_tools, demonstrations

from robopolicy.atomic import write_json
from robopolicy.data.sampler import SequenceDataset
from robopolicy.specs import ChunkSpec

TASK, STATE_KEY = "push_puck", "state"
# --sides: LeRobot's DiffusionPolicy, or one of our heads (name, head, params; diffusion samples as LeRobot does)
OURS = {"diffusion": ("ours diffusion", "diffusion", {"sampler": "ddpm"}),
        "flow": ("ours flow-1", "flow", {"inference_steps": 1}),
        "consistency": ("ours consistency-1", "consistency", {"inference_steps": 1})}
CHUNKS = ChunkSpec(n_obs_steps=2, horizon=16, n_action_steps=8)


class RemotePolicy:
    """A policy living in a side process, as the evaluation protocol's `ChunkPolicy` sees it."""

    config = CHUNKS

    def __init__(self, side: Side) -> None:
        self.side = side

    def predict_action(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.tensor(self.side.ask("predict", state=obs[STATE_KEY].tolist())["actions"])

    def reset(self) -> None:
        """Each call gets the whole observation history, so there is no per-episode state to clear."""


def write_windows(store: Path, path: Path, steps: int, batch_size: int, seed: int) -> dict:
    """Every training window of the store and the order both sides draw them in: epochs of fresh permutations."""
    ds = SequenceDataset(store, obs_keys=[STATE_KEY], n_obs_steps=CHUNKS.n_obs_steps, horizon=CHUNKS.horizon,
                         val_ratio=0.0)
    windows = ds[np.arange(len(ds))]
    rng = np.random.default_rng(seed)
    epochs = -(-steps * batch_size // len(ds))
    order = np.concatenate([rng.permutation(len(ds)) for _ in range(epochs)])
    np.savez(path, obs_state=windows["obs"][STATE_KEY].numpy(), action=windows["action"].numpy(), order=order)
    return {"windows": len(ds), "episodes": int(len(ds.episode_ends)), "epochs": steps * batch_size / len(ds)}


def start_sides(names: list[str], setting: dict, threads: int, logs: Path) -> dict[str, Side]:
    """One process per side in `names` ("lerobot" or a key of OURS)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    blob = json.dumps(setting)
    sides = {}
    for name in names:
        if name == "lerobot":
            sides[LEROBOT] = Side(LEROBOT, [str(TOOLS_PYTHON), "lerobot_side.py", blob], env, logs / "lerobot.log")
            continue
        label, head, params = OURS[name]
        if head == "diffusion":
            params = {**params, "inference_steps": setting["inference_steps"]}
        if head == "consistency":  # its discretization curriculum spans the whole run
            params = {**params, "ct_total_steps": setting["schedule_steps"]}
        sides[label] = Side(label, [sys.executable, "ours_side.py", blob, head, json.dumps(params)], env,
                            logs / f"{name}.log")
    return sides


def evaluate_sides(sides: dict[str, Side], episodes: int, n_envs: int) -> dict[str, dict]:
    from robopolicy.eval.protocol import EvalConfig, evaluate
    from robopolicy.sim import make_vector_env

    env = make_vector_env(TASK, n_envs, n_obs_steps=CHUNKS.n_obs_steps, n_action_steps=CHUNKS.n_action_steps)
    config = EvalConfig(n_episodes=episodes, policy_seeds=[0], n_envs=n_envs, n_videos=0)
    try:
        results = {}
        for name, side in sides.items():
            print(f"evaluating {name} on {episodes} held-out seeds", file=sys.stderr, flush=True)
            result = evaluate(RemotePolicy(side), env, config)
            results[name] = {"success": result["success"]["rate"], "ci95": result["success"]["ci95"],
                             "return": result["return"]["mean"]}
            print(f"{name}: success {results[name]['success']:.0%}", file=sys.stderr, flush=True)
        return results
    finally:
        env.close()


def print_table(evals: list[dict], train: dict[str, dict], meta: dict) -> None:
    print(f"\n{' vs '.join(train)} (LeRobot {meta['lerobot']}) on {TASK} (state), {meta['data']['episodes']} demos, "
          f"batch {meta['batch_size']}, torch threads {meta['threads']}, diffusion sampled with "
          f"DDPM-{meta['setting']['inference_steps']}")
    print(f"same training windows in the same order: {meta['same_windows']}")
    print(f"{'training':<20} {'step s':>8} {'samples/s':>10} {'final loss':>11}")
    for name, row in train.items():
        print(f"{name:<20} {row['step_s_median']:>8.3f} {row['samples_per_s']:>10.1f} {row['final_loss']:>11.4f}")
    print(f"\n{'success at step':<16}" + "".join(f"{name:>30}" for name in train))
    for point in evals:
        cells = "".join(f"{r['success'] * 100:>12.0f} % [{r['ci95'][0] * 100:>3.0f}, {r['ci95'][1] * 100:>3.0f}]{'':>5}"
                        for r in point["results"].values())
        print(f"{point['step']:<16}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5000, help="training steps of each side")
    parser.add_argument("--batch-size", type=int, default=256, help="push_puck's recipe batch")
    parser.add_argument("--steps-per-round", type=int, default=250, help="training steps per turn of a side")
    parser.add_argument("--demos", type=int, default=100, help="push_puck demonstrations to collect")
    parser.add_argument("--episodes", type=int, default=50, help="held-out evaluation episodes per evaluation")
    parser.add_argument("--n-envs", type=int, default=10)
    parser.add_argument("--eval-at", default="", help="comma-separated training steps to evaluate at (and the last)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--inference-steps", type=int, default=100, help="DDPM sampling steps of both (default 100)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every process (default 1: 2 cores)")
    parser.add_argument("--sides", default="lerobot,diffusion",
                        help=f"comma-separated: lerobot and any of {', '.join(OURS)} (default lerobot,diffusion)")
    parser.add_argument("--out", default="runs/peers_success")
    args = parser.parse_args()
    names = args.sides.split(",")
    if unknown := set(names) - {"lerobot", *OURS}:
        parser.error(f"--sides: unknown {', '.join(sorted(unknown))}; expected lerobot, {', '.join(OURS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tools = check_tools() if "lerobot" in names else "- - -"
    start = time.perf_counter()
    store = demonstrations(out, args.demos, "push_puck_proficient")
    windows = out / "windows.npz"
    data = write_windows(store, windows, args.steps, args.batch_size, seed=0)
    setting = {**UNET, "mode": "state", "state_key": STATE_KEY, "state_dim": 6, "action_dim": 2,
               "n_obs_steps": CHUNKS.n_obs_steps, "horizon": CHUNKS.horizon, "n_action_steps": CHUNKS.n_action_steps,
               "crop": None, "inference_steps": args.inference_steps,
               "batch_size": args.batch_size, "lr": args.lr,
               "schedule_steps": args.steps, "seed": 0, "threads": args.threads, "device": "cpu",
               "batches": str(windows.resolve()), "dataset": str(store.resolve())}
    eval_at = sorted({int(s) for s in args.eval_at.split(",") if s} | {args.steps})
    sides = start_sides(names, setting, args.threads, out)
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    losses: dict[str, list[float]] = {name: [] for name in sides}
    checksums: dict[str, list[float]] = {name: [] for name in sides}  # of each step's actions: the same windows?
    evals: list[dict] = []
    try:
        built = {name: side.ask("build") for name, side in sides.items()}
        done = 0
        for stop in eval_at:
            while done < stop:
                steps = min(args.steps_per_round, stop - done)
                order = list(sides.items()) if (done // args.steps_per_round) % 2 == 0 else list(sides.items())[::-1]
                for name, side in order:
                    reply = side.ask("train", steps=steps)
                    seconds[name] += reply["seconds"]
                    losses[name] += reply["losses"]
                    checksums[name] += reply["checksums"]
                done += steps
                print(f"trained {done}/{args.steps} steps", file=sys.stderr, flush=True)
            evals.append({"step": done, "results": evaluate_sides(sides, args.episodes, args.n_envs)})
    finally:
        for side in sides.values():
            side.close()
    train = {name: {"step_s_median": statistics.median(s), "samples_per_s": args.batch_size / statistics.median(s),
                    "final_loss": float(np.mean(losses[name][-100:]))} for name, s in seconds.items()}
    meta = {"lerobot": tools.split()[0], "threads": args.threads, "batch_size": args.batch_size, "data": data,
            "setting": setting, "params": {name: b["params"] for name, b in built.items()},
            "same_windows": len({tuple(c) for c in checksums.values()}) == 1,
            "wall_s": time.perf_counter() - start}
    print_table(evals, train, meta)
    write_json(out / "compare_peers_success.json", {"meta": meta, "train": train, "evaluations": evals,
                                                    "losses": losses}, indent=1)
    print(f"\nwrote {out / 'compare_peers_success.json'}")


if __name__ == "__main__":
    main()
