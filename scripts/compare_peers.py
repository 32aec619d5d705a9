#!/usr/bin/env python
"""Side by side with LeRobot: training samples/s, peak memory and chunk latency at equal settings, in one run.

LeRobot's DiffusionPolicy (in its own virtual environment, .venv-tools, made by scripts/install_test_tools.sh)
against our diffusion head and our 1-step heads (flow-1, consistency-1), all with the same configuration: a
1-D conditional UNet (same down_dims, kernel, groups, 128-d step embedding), horizon 16, 2 observation steps,
8 executed actions, one 84x84 camera (ResNet-18 with GroupNorm, 32 spatial-softmax keypoints, 76x76 crop) and
the pusher position, DDPM with 100 train timesteps and a squared-cosine schedule. The data are the same too:
push_puck_image demonstrations from our scripted expert, cut into training windows once and fed to every
side as identical batches (see docs/peers.md).

Each policy lives in its own long-lived process (LeRobot's in .venv-tools, ours in this interpreter), all with
the same torch thread count; the driver alternates training steps and inference calls between them round by
round, so every figure is taken under the same machine load; ratios are medians over rounds of the paired
ratio within a round. Inference is timed per chunk (batch 1, from a 2-frame history) and in closed loop, as
each library's per-step `select_action` runs it (the replanning step and the slowest other step). Peak memory
is each process's peak resident set (and, on CUDA, peak allocated memory).

    .venv/bin/python scripts/compare_peers.py [--batch-size 32] [--train-steps 12] [--repeats 10] [--loop-rounds 3]
        [--threads 1] [--down-dims 64,128,256] [--episodes 12] [--device cpu] [--out runs/peers]

Writes OUT/compare_peers.json (every sample and the summary) and prints a table with the ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from robopolicy.atomic import write_json
from robopolicy.data.sampler import SequenceDataset

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "scripts" / "peers"
TOOLS_PYTHON = ROOT / ".venv-tools" / "bin" / "python"
TASK, IMAGE_KEY, STATE_KEY = "push_puck_image", "image", "agent_pos"

# (name, head, params) of our processes; LeRobot's is LEROBOT
OURS = [("ours diffusion", "diffusion", {"sampler": "ddpm", "inference_steps": 100}),
        ("ours flow", "flow", {"inference_steps": 1}),
        ("ours consistency", "consistency", {"inference_steps": 1})]
LEROBOT = "LeRobot diffusion"
# (label, process, infer kwargs): LeRobot's default sampler (DDPM, as many steps as train timesteps) and DDIM-10
INFERENCE = [
    ("LeRobot DDPM-100", LEROBOT, {"sampler": "ddpm", "steps": 100}),
    ("LeRobot DDIM-10", LEROBOT, {"sampler": "ddim", "steps": 10}),
    ("ours DDPM-100", "ours diffusion", {"params": {"sampler": "ddpm", "inference_steps": 100}, "steps": 100}),
    ("ours DDIM-10", "ours diffusion", {"params": {"sampler": "ddim", "inference_steps": 10}, "steps": 10}),
    ("ours flow-1", "ours flow", {"params": {}, "steps": 1}),
    ("ours consistency-1", "ours consistency", {"params": {}, "steps": 1}),
]
# the UNet and noise schedule both libraries build (LeRobot's DiffusionConfig fields; ours the same values)
UNET = {"down_dims": [64, 128, 256], "kernel_size": 5, "n_groups": 8, "time_embed_dim": 128, "num_train_timesteps": 100}
TRAIN_TARGET, SPEEDUP_TARGET = 1.0, 10.0  # issue 17: diffusion training >= 1.0x LeRobot; a 1-step head >= 10x


class Side:
    """One policy process answering the JSON-lines commands of scripts/peers/common.py."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log.open("w")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, env=env, cwd=PEERS)

    def ask(self, cmd: str, **kwargs) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: the process exited (rc={self.proc.wait()}); see {self.log.name}")
        reply = json.loads(line)
        if not reply.pop("ok"):
            raise RuntimeError(f"{self.name}: {cmd} failed:\n{reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        self.log.close()


def check_tools() -> str:
    """LeRobot's version in .venv-tools, or exit saying how to make it."""
    probe = "import importlib.metadata as m; print(m.version('lerobot'), m.version('torch'), m.version('diffusers'))"
    found = subprocess.run([str(TOOLS_PYTHON), "-c", probe], capture_output=True, text=True) \
        if TOOLS_PYTHON.exists() else None
    if found is None or found.returncode:
        sys.exit(f"compare_peers: LeRobot is not importable from {TOOLS_PYTHON}; "
                 "run bash scripts/install_test_tools.sh")
    return found.stdout.strip()


def demonstrations(out: Path, episodes: int, recipe_name: str = TASK) -> Path:
    """Demos of a datasets/ recipe (default push_puck_image) from its scripted expert (our collector), reused when
    already there."""
    from robopolicy.sim.collect import collect, load_recipe

    store = out / f"{recipe_name}_{episodes}ep.zarr"
    if not store.exists():
        recipe = dataclasses.replace(load_recipe(recipe_name), n_episodes=episodes, output=str(store))
        collect(recipe)
    return store


def write_batches(store: Path, path: Path, batch_size: int, n_batches: int, seed: int) -> dict:
    """The training batches every side uses, one observation for inference and the normalization statistics."""
    ds = SequenceDataset(store, obs_keys=[IMAGE_KEY, STATE_KEY], n_obs_steps=2, horizon=16, val_ratio=0.0)
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {"n_batches": np.asarray(n_batches)}
    for i in range(n_batches):
        batch = ds[rng.choice(len(ds), batch_size, replace=False)]
        arrays[f"image_{i}"] = batch["obs"][IMAGE_KEY].numpy()
        arrays[f"state_{i}"] = batch["obs"][STATE_KEY].numpy()
        arrays[f"action_{i}"] = batch["action"].numpy()
    one = ds[[len(ds) // 2]]
    arrays["obs_image"], arrays["obs_state"] = one["obs"][IMAGE_KEY].numpy(), one["obs"][STATE_KEY].numpy()
    stats = ds.stats()
    arrays.update(state_min=stats[STATE_KEY]["min"], state_max=stats[STATE_KEY]["max"],
                  action_min=stats["action"]["min"], action_max=stats["action"]["max"])
    frames = np.stack([arrays[f"image_{i}"] for i in range(n_batches)]).reshape(-1, 3).astype(np.float64) / 255.0
    arrays.update(image_mean=frames.mean(0).astype(np.float32), image_std=frames.std(0).astype(np.float32))
    np.savez(path, **arrays)
    return {"samples": len(ds), "episodes": int(len(ds.episode_ends))}


def start_sides(setting: dict, threads: int, logs: Path) -> dict[str, Side]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    blob = json.dumps(setting)
    sides = {LEROBOT: Side(LEROBOT, [str(TOOLS_PYTHON), "lerobot_side.py", blob], env, logs / "lerobot.log")}
    for name, head, params in OURS:
        sides[name] = Side(name, [sys.executable, "ours_side.py", blob, head, json.dumps(params)], env,
                           logs / f"{name.replace(' ', '_')}.log")
    return sides


def alternate(sides: list[Side], rounds: int, cmd: str, **kwargs) -> dict[str, list[float]]:
    """``rounds`` rounds of ``cmd`` on every side, the order rotated each round; per-side timed seconds."""
    seconds: dict[str, list[float]] = {s.name: [] for s in sides}
    for r in range(rounds):
        print(f"{cmd} round {r + 1}/{rounds}", file=sys.stderr, flush=True)
        for side in sides[r % len(sides):] + sides[:r % len(sides)]:
            seconds[side.name] += side.ask(cmd, **kwargs)["seconds"]
    return seconds


def infer_rounds(sides: dict[str, Side], repeats: int, warmup: int) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {label: [] for label, _, _ in INFERENCE}
    for r in range(warmup + repeats):
        print(f"inference round {r + 1}/{warmup + repeats}", file=sys.stderr, flush=True)
        order = INFERENCE[r % len(INFERENCE):] + INFERENCE[:r % len(INFERENCE)]
        for label, proc, kwargs in order:
            got = sides[proc].ask("infer", repeats=1, **kwargs)["seconds"]
            if r >= warmup:
                seconds[label] += got
    return seconds


def paired_ratio(baseline: list[float], ours: list[float], per_round: int) -> float:
    """Median over rounds of baseline time / our time within the round (> 1: ours faster). Both ran back to
    back in each round, so this cancels the load drift that a ratio of overall medians keeps."""
    chunks = [slice(r * per_round, (r + 1) * per_round) for r in range(len(ours) // per_round)]
    return statistics.median(sum(baseline[c]) / sum(ours[c]) for c in chunks)


def loop_rounds(sides: dict[str, Side], rounds: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Closed-loop control, one chunk per setting and round: replanning-step seconds, and the slowest other step."""
    replan: dict[str, list[float]] = {label: [] for label, _, _ in INFERENCE}
    other: dict[str, float] = dict.fromkeys(replan, 0.0)
    for r in range(rounds):
        print(f"closed-loop round {r + 1}/{rounds}", file=sys.stderr, flush=True)
        for label, proc, kwargs in INFERENCE[r % len(INFERENCE):] + INFERENCE[:r % len(INFERENCE)]:
            got = sides[proc].ask("closed_loop", cycles=1, **kwargs)
            replan[label] += got["seconds"]
            other[label] = max(other[label], got["other_max_s"])
    return replan, other


def summarize(train_s: dict[str, list[float]], infer_s: dict[str, list[float]], memory: dict[str, dict],
              batch_size: int, steps_per_round: int, replan_s: dict[str, list[float]],
              other_s: dict[str, float]) -> dict:
    train = {name: {"step_s_median": statistics.median(s), "samples_per_s": batch_size / statistics.median(s),
                    "peak_rss_mb": memory[name]["peak_rss_mb"], "cuda_peak_mb": memory[name].get("cuda_peak_mb")}
             for name, s in train_s.items()}
    infer = {label: {"ms_median": 1e3 * statistics.median(s), "ms_min": 1e3 * min(s)} for label, s in infer_s.items()}
    ratios = {f"train_ours_{name.split()[1]}_vs_lerobot": paired_ratio(train_s[LEROBOT], train_s[name], steps_per_round)
              for name, _, _ in OURS}
    loop = {label: {"replan_ms_median": 1e3 * statistics.median(s), "other_steps_max_ms": 1e3 * other_s[label]}
            for label, s in replan_s.items()}
    for ours, baseline in (("DDPM-100", "DDPM-100"), ("DDIM-10", "DDIM-10"), ("flow-1", "DDPM-100"),
                           ("flow-1", "DDIM-10"), ("consistency-1", "DDPM-100"), ("consistency-1", "DDIM-10")):
        for kind, samples in (("infer", infer_s), ("replan", replan_s)):
            ratios[f"{kind}_ours_{ours}_vs_lerobot_{baseline}"] = paired_ratio(samples[f"LeRobot {baseline}"],
                                                                               samples[f"ours {ours}"], 1)
    best_one_step = max(ratios["infer_ours_flow-1_vs_lerobot_DDPM-100"],
                        ratios["infer_ours_consistency-1_vs_lerobot_DDPM-100"])
    goals = {"train_ours_diffusion_ge_1.0x": ratios["train_ours_diffusion_vs_lerobot"] >= TRAIN_TARGET,
             "one_step_ge_10x_lerobot_ddpm100": best_one_step >= SPEEDUP_TARGET}
    return {"train": train, "inference": infer, "closed_loop": loop, "ratios": ratios, "goals": goals}


def print_table(summary: dict, meta: dict) -> None:
    print(f"\nLeRobot {meta['lerobot']} vs robopolicy; torch threads {meta['threads']}, batch {meta['batch_size']}, "
          f"down_dims {meta['down_dims']}, device {meta['device']}")
    print(f"{'training':<22} {'params':>9} {'step s':>8} {'samples/s':>10} {'peak RSS MB':>12}")
    for name, row in summary["train"].items():
        print(f"{name:<22} {meta['params'][name] / 1e6:>8.2f}M {row['step_s_median']:>8.3f} "
              f"{row['samples_per_s']:>10.1f} {row['peak_rss_mb']:>12.0f}")
    print(f"\n{'inference (batch 1)':<22} {'ms/chunk':>10} {'min ms':>8} {'replan ms':>10} {'other steps':>12}")
    for label, row in summary["inference"].items():
        loop = summary["closed_loop"][label]
        print(f"{label:<22} {row['ms_median']:>10.1f} {row['ms_min']:>8.1f} {loop['replan_ms_median']:>10.1f} "
              f"{loop['other_steps_max_ms']:>12.1f}")
    print("\nratios, median over rounds of the paired ratio (> 1: ours faster)")
    for key, value in summary["ratios"].items():
        print(f"  {key:<44} {value:7.2f}x")
    for goal, met in summary["goals"].items():
        print(f"  goal {goal:<39} {'met' if met else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=12, help="timed training steps per process")
    parser.add_argument("--steps-per-round", type=int, default=2, help="training steps per turn of a process")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps and inference calls first")
    parser.add_argument("--repeats", type=int, default=10, help="timed inference calls per setting")
    parser.add_argument("--loop-rounds", type=int, default=3, help="closed-loop chunks per setting (select_action)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every process (default 1: 2 cores)")
    parser.add_argument("--down-dims", default="64,128,256",
                        help="UNet widths for both (our push_puck_image recipe's; LeRobot's default is 512,1024,2048)")
    parser.add_argument("--episodes", type=int, default=12, help="push_puck_image demonstrations to collect")
    parser.add_argument("--n-batches", type=int, default=4, help="distinct training batches, cycled")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (CUDA needs a CUDA torch in both venvs)")
    parser.add_argument("--out", default="runs/peers")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tools = check_tools()
    start = time.perf_counter()
    store = demonstrations(out, args.episodes)
    batches = out / "batches.npz"
    data = write_batches(store, batches, args.batch_size, args.n_batches, seed=0)
    setting = {**UNET, "image_key": IMAGE_KEY, "state_key": STATE_KEY, "image_shape": [84, 84, 3], "state_dim": 2,
               "action_dim": 2, "n_obs_steps": 2, "horizon": 16, "n_action_steps": 8, "crop": [76, 76],
               "down_dims": [int(d) for d in args.down_dims.split(",")], "batch_size": args.batch_size, "lr": 1e-4,
               "schedule_steps": 100_000, "seed": 0, "threads": args.threads, "device": args.device,
               "batches": str(batches.resolve()), "dataset": str(store.resolve())}
    sides = start_sides(setting, args.threads, out)
    try:
        built = {name: side.ask("build") for name, side in sides.items()}
        order = list(sides.values())
        alternate(order, 1, "train", steps=args.warmup)
        rounds = max(1, args.train_steps // args.steps_per_round)
        train_s = alternate(order, rounds, "train", steps=args.steps_per_round)
        memory = {name: side.ask("memory") for name, side in sides.items()}  # peaks after training
        infer_s = infer_rounds(sides, args.repeats, args.warmup)
        replan_s, other_s = loop_rounds(sides, args.loop_rounds)
    finally:
        for side in sides.values():
            side.close()
    lerobot_version, tools_torch, tools_diffusers = tools.split()
    meta = {"lerobot": lerobot_version, "lerobot_torch": tools_torch, "lerobot_diffusers": tools_diffusers,
            "ours_torch": built["ours diffusion"]["torch"], "python": platform.python_version(),
            "threads": args.threads, "batch_size": args.batch_size, "down_dims": setting["down_dims"],
            "device": args.device, "cpu_count": os.cpu_count(), "data": data, "setting": setting,
            "params": {name: b["params"] for name, b in built.items()},
            "unet_params": {name: b["unet_params"] for name, b in built.items()},
            "rss_after_build_mb": {name: b["rss_mb"] for name, b in built.items()},
            "wall_s": time.perf_counter() - start,
            "success_rates": "not measured: training an image policy to success on push_puck_image takes hours on "
                             "this CPU (its recipe: 20k steps at batch 256)"}
    summary = summarize(train_s, infer_s, memory, args.batch_size, args.steps_per_round, replan_s, other_s)
    print_table(summary, meta)
    write_json(out / "compare_peers.json", {"meta": meta, **summary, "memory": memory,
                                            "samples": {"train_s": train_s, "infer_s": infer_s, "replan_s": replan_s}},
               indent=1)
    shutil.copy(out / "compare_peers.json", out / f"compare_peers_{time.strftime('%Y%m%dT%H%M%S')}.json")
    print(f"\nwrote {out / 'compare_peers.json'}")


if __name__ == "__main__":
    main()
