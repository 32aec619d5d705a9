"""Conversion throughput and peak memory for every input format, each converted to a native zarr store.

The same synthetic demonstrations (state 9, action 7, one SIZExSIZE camera) are written in every format:
zarr, robomimic hdf5 and LeRobot v3.0 (H.264) by robopolicy's writers, a diffusion_policy store (zarr v2, Jpeg2k
camera) as its ReplayBuffer lays it out, RLDS by tensorflow-datasets' own builder and Minari by minari itself
(both from the test-tools install; skipped when absent). Each conversion
runs in a fresh process that reports frames/s and its peak resident memory above the post-import baseline.
Each format is measured at `--scales` multiples of the episode count: a streaming reader's peak memory stays
flat as the dataset grows. Ratios are against zarr -> zarr in the same run.
Usage: python scripts/bench_convert.py [--episodes 20] [--length 100] [--size 84] [--scales 1 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _bench import write_report

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / ".venv-tools"
TOOL_SCRIPTS = REPO / "tests" / "data_tools"


def _status_mb(field: str) -> float:
    """VmHWM (peak) or VmRSS (now) of this process. ru_maxrss would also count the parent's memory at fork."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def child(src: str, dst: str) -> None:
    """Convert SRC to DST in this process; print seconds, frames and memory as JSON. The readers' lazy imports
    (tfrecord imports torch: ~3 s) are done first, so that the time is the conversion's."""
    import av  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import tfrecord.reader  # noqa: F401
    from PIL import Image  # noqa: F401

    from robopolicy.data.convert import convert

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS: the peak measured is the conversion's, not the imports'
    base = _status_mb("VmRSS")
    start = time.perf_counter()
    summary, out = convert(src, dst, progress=False)
    seconds = time.perf_counter() - start
    print(json.dumps({"format": summary.format, "frames": out.n_frames, "episodes": out.n_episodes,
                      "seconds": seconds, "peak_extra_mb": max(0.0, _status_mb("VmHWM") - base), "baseline_mb": base}))


def build_zarr(path: Path, episodes: int, length: int, size: int) -> None:
    from robopolicy.data.replay_buffer import ReplayBuffer
    from robopolicy.data.spec import build_attrs

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    rb = ReplayBuffer.create(path)
    for e in range(episodes):
        cam = np.stack([np.stack([xx + t, yy + e, np.full_like(xx, t)], -1) for t in range(length)]).astype(np.uint8)
        episode = {"action": rng.standard_normal((length, 7)).astype(np.float32),
                   "state": rng.standard_normal((length, 9)).astype(np.float32), "cam": cam}
        if e == 0:
            rb.update_attrs(build_attrs(episode, ["state", "cam"], fps=10.0))
        rb.add_episode(episode)
    rb.close()


def build_dp_zarr(base: Path, path: Path) -> None:
    """`base`'s arrays as diffusion_policy's ReplayBuffer stores them: zarr v2, Jpeg2k camera frames one per chunk,
    Blosc zstd for the rest. Its reader path (v2 metadata, JPEG 2000 decoding) differs from our own stores'."""
    import numcodecs
    import zarr
    from imagecodecs.numcodecs import Jpeg2k

    from robopolicy.data.replay_buffer import ReplayBuffer

    rb = ReplayBuffer.open(base)
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    blosc = numcodecs.Blosc("zstd", 5, numcodecs.Blosc.NOSHUFFLE)
    for key in rb.keys:
        arr = rb.read(key)
        image = arr.ndim == 4
        root.create_array(f"data/{key}", data=arr, chunks=(1, *arr.shape[1:]) if image else arr.shape,
                          compressors=Jpeg2k(level=50) if image else blosc)
    root.create_array("meta/episode_ends", data=rb.episode_ends.astype(np.int64), chunks=rb.episode_ends.shape)


def inputs(tmp: Path, episodes: int, length: int, size: int) -> dict[str, Path | str]:
    """{format label: dataset path, or the reason it was skipped}."""
    from robopolicy.data.convert import convert

    out: dict[str, Path | str] = {}
    base = tmp / "base.zarr"
    build_zarr(base, episodes, length, size)
    out["zarr"] = base
    build_dp_zarr(base, tmp / "dp.zarr")
    out["dp zarr (jp2k)"] = tmp / "dp.zarr"
    convert(base, tmp / "robomimic.hdf5", progress=False)
    out["robomimic"] = tmp / "robomimic.hdf5"
    convert(base, tmp / "lerobot", dst_format="lerobot", progress=False)
    out["lerobot (h264)"] = tmp / "lerobot"
    args = [str(episodes), str(length), str(size)]
    tfds_py, tools_py = TOOLS / "tfds" / "bin" / "python", TOOLS / "bin" / "python"
    if tfds_py.exists():
        subprocess.run([str(tfds_py), str(TOOL_SCRIPTS / "make_rlds.py"), str(tmp / "rlds"), *args], check=True,
                       capture_output=True)
        out["rlds"] = tmp / "rlds" / "rlds_toy"
    else:
        out["rlds"] = f"skipped: {tfds_py} absent (bash scripts/install_test_tools.sh)"
    if tools_py.exists():
        subprocess.run([str(tools_py), str(TOOL_SCRIPTS / "make_minari.py"), str(tmp / "minari"), *args], check=True,
                       capture_output=True)
        for storage in ("hdf5", "arrow"):
            out[f"minari {storage}"] = tmp / "minari" / storage / "robopolicy" / f"toy-{storage}-v0"
    else:
        out["minari"] = f"skipped: {tools_py} absent (bash scripts/install_test_tools.sh)"
    return out


def measure(src: Path, dst: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", str(src), str(dst)], capture_output=True, text=True,
                          check=False)
    if proc.returncode:
        raise RuntimeError(f"converting {src} failed:\n{proc.stderr[-2000:]}")
    shutil.rmtree(dst, ignore_errors=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(episodes: int, length: int, size: int, scales: list[int]) -> tuple[list[dict], dict[str, str]]:
    """Measure every format at every scale; returns the table rows and the formats skipped (with why)."""
    rows, skipped = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for scale in scales:
            work = Path(tmp) / f"x{scale}"
            work.mkdir()
            for label, src in inputs(work, episodes * scale, length, size).items():
                if isinstance(src, str):
                    skipped[label] = src
                    continue
                r = measure(src, work / "out.zarr")
                rows.append({"input": label, "scale": scale, **r, "frames_per_s": r["frames"] / r["seconds"]})
            shutil.rmtree(work)
    for r in rows:
        baseline = next(b for b in rows if b["input"] == "zarr" and b["scale"] == r["scale"])
        r["rate_vs_zarr"] = r["frames_per_s"] / baseline["frames_per_s"]
    return rows, skipped


def print_table(rows: list[dict], skipped: dict[str, str], length: int, size: int) -> None:
    print(f"conversion to zarr: {length}-step episodes, {size}x{size} camera + state 9 + action 7 "
          "(RLDS: a PNG and a JPEG camera; Minari: state 4, action 2)")
    print(f"{'input':<16}{'episodes':>9}{'frames':>8}{'frames/s':>10}{'vs zarr':>9}{'peak MB':>9}")
    for r in rows:
        print(f"{r['input']:<16}{r['episodes']:>9}{r['frames']:>8}{r['frames_per_s']:>10,.0f}"
              f"{r['rate_vs_zarr']:>8.2f}x{r['peak_extra_mb']:>9.0f}")
    for label, why in skipped.items():
        print(f"{label:<16} {why}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--length", type=int, default=100)
    p.add_argument("--size", type=int, default=84)
    p.add_argument("--scales", type=int, nargs="+", default=[1, 2])
    p.add_argument("--json", type=Path)
    p.add_argument("--child", nargs=2, metavar=("SRC", "DST"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return
    rows, skipped = run(args.episodes, args.length, args.size, args.scales)
    print_table(rows, skipped, args.length, args.size)
    if args.json:
        write_report(args.json, {"rows": rows, "skipped": skipped})


if __name__ == "__main__":
    main()
