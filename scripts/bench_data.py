"""Sampler throughput: SequenceDataset through a DataLoader vs reading the same windows naively from zarr.

Prints a table and writes JSON. Two settings: low-dim only, and 2 cameras of 84x84 RGB plus low-dim.
"Naive" reads each window's rows straight from the zarr arrays, one sample at a time, in the main process.
Usage: python scripts/bench_data.py [--episodes 100] [--length 200] [--workers 2] [--batch 256] [--json out.json]
With --convert it measures conversion instead: frames/s and peak memory of every input format converted to zarr
(scripts/bench_convert.py; --episodes default 20, --length 100, each at --scales 1 2 times the episodes).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _bench import write_report

from robopolicy.data.loader import make_loader
from robopolicy.data.replay_buffer import ReplayBuffer
from robopolicy.data.sampler import SequenceDataset

N_OBS, HORIZON = 2, 16


def build_store(path: Path, episodes: int, length: int) -> None:
    rng = np.random.default_rng(0)
    rb = ReplayBuffer.create(path, attrs={"fps": 10.0})
    for _ in range(episodes):
        rb.add_episode({
            "action": rng.standard_normal((length, 7)).astype(np.float32),
            "state": rng.standard_normal((length, 9)).astype(np.float32),
            "cam0": rng.integers(0, 256, (length, 84, 84, 3), dtype=np.uint8),
            "cam1": rng.integers(0, 256, (length, 84, 84, 3), dtype=np.uint8),
        })


def loader_rate(ds: SequenceDataset, workers: int, batch: int, seconds: float) -> float:
    loader = make_loader(ds, batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0, drop_last=True)
    next(iter(loader))  # start workers, first-touch costs
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for b in loader:
            n += len(b["action"])
            if time.perf_counter() - start >= seconds:
                break
    return n / (time.perf_counter() - start)


def naive_rate(path: Path, keys: list[str], seconds: float) -> float:
    rb = ReplayBuffer.open(path)
    arrays = {k: rb.array(k) for k in [*keys, "action"]}
    ends = rb.episode_ends
    starts = np.concatenate([[0], ends[:-1]])
    rng = np.random.default_rng(0)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        e = rng.integers(len(ends))
        t = rng.integers(starts[e], ends[e])
        obs_idx = np.clip(np.arange(t - N_OBS + 1, t + 1), starts[e], ends[e] - 1)
        act_idx = np.clip(np.arange(t, t + HORIZON), starts[e], ends[e] - 1)
        for k in keys:
            arrays[k][int(obs_idx[0]) : int(obs_idx[-1]) + 1]
        arrays["action"][int(act_idx[0]) : int(act_idx[-1]) + 1]
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--length", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--json", type=Path)
    p.add_argument("--convert", action="store_true", help="conversion throughput per input format instead")
    p.add_argument("--scales", type=int, nargs="+", default=[1, 2], help="--convert: multiples of --episodes")
    args = p.parse_args()
    if args.convert:
        import bench_convert  # scripts/ is on sys.path when this file runs as a script

        episodes = args.episodes if "--episodes" in sys.argv else 20
        length = args.length if "--length" in sys.argv else 100
        rows, skipped = bench_convert.run(episodes, length, 84, args.scales)
        bench_convert.print_table(rows, skipped, length, 84)
        if args.json:
            write_report(args.json, {"rows": rows, "skipped": skipped})
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.zarr"
        t0 = time.perf_counter()
        build_store(path, args.episodes, args.length)
        print(f"store: {args.episodes} episodes x {args.length} steps, built in {time.perf_counter() - t0:.1f}s")
        for name, keys in [("low-dim", ["state"]), ("2x84x84 rgb + low-dim", ["cam0", "cam1", "state"])]:
            t0 = time.perf_counter()
            ds = SequenceDataset(path, keys, n_obs_steps=N_OBS, horizon=HORIZON, split="train")
            load_s = time.perf_counter() - t0
            naive = naive_rate(path, keys, args.seconds)
            for workers in sorted({args.workers, 0}, reverse=True):
                fast = loader_rate(ds, workers, args.batch, args.seconds)
                results.append({"setting": name, "workers": workers, "windows_per_s": fast,
                                "naive_windows_per_s": naive,
                                "speedup": fast / naive, "dataset_load_s": load_s, "batch": args.batch})
    print(f"{'setting':<24}{'workers':>8}{'SequenceDataset/s':>20}{'naive zarr/s':>15}{'speedup':>10}{'load s':>9}")
    for r in results:
        print(f"{r['setting']:<24}{r['workers']:>8}{r['windows_per_s']:>20,.0f}{r['naive_windows_per_s']:>15,.0f}"
              f"{r['speedup']:>9.0f}x{r['dataset_load_s']:>9.1f}")
    if args.json:
        write_report(args.json, results)


if __name__ == "__main__":
    main()
