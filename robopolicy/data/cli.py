"""`robopolicy convert` and `robopolicy data {inspect,stats}`; the main CLI calls `register`."""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from robopolicy.data.convert import FORMATS, convert
from robopolicy.data.inspect import inspect_dataset


def _formats_epilog() -> str:
    lines = ["formats (auto-detected from SRC; the output format from DST's suffix or --to):"]
    for fmt in FORMATS.values():
        mode = "read/write" if fmt.write else "read"
        lines.append(f"  {fmt.name:<10} {mode:<10} {fmt.help}")
    return "\n".join(lines)


def _convert(args: argparse.Namespace) -> int:
    options = {"lerobot_images": args.lerobot_images, "fps": args.fps, "task": args.task,
               "lerobot_data_mb": args.lerobot_data_mb, "lerobot_video_mb": args.lerobot_video_mb,
               "lerobot_episodes_mb": args.lerobot_episodes_mb,
               "command": "robopolicy convert " + " ".join(sys.argv[2:])}
    src, out = convert(
        args.src, args.dst, src_format=args.format, dst_format=args.to, overwrite=args.overwrite,
        filter_key=args.filter_key, progress=not args.no_progress, options=options, recipe=args.recipe,
    )
    print("source:\n" + src.render())
    print("written (validated: episodes, frames, shapes, dtypes match):\n" + out.render())
    return 0


def _inspect(args: argparse.Namespace) -> int:
    print(inspect_dataset(args.path, args.format).render())
    return 0


def _stats(args: argparse.Namespace) -> int:
    from robopolicy.data.replay_buffer import ReplayBuffer
    from robopolicy.data.sampler import SequenceDataset
    from robopolicy.data.spec import describe

    rb = ReplayBuffer.open(args.path)
    desc = describe(rb)
    keys = args.obs_keys or [k for k, v in desc["obs"].items() if v["kind"] == "low_dim"]
    ds = SequenceDataset(rb, keys, action_key=desc["action"]["key"], split=args.split, val_ratio=args.val_ratio,
                         seed=args.seed)
    stats = {k: {s: np.round(v, 6).tolist() for s, v in d.items()} for k, d in ds.stats().items()}
    print(json.dumps({"episodes": len(ds.episodes), "samples": len(ds), "stats": stats}, indent=2))
    return 0


def _regenerate(args: argparse.Namespace) -> int:
    # The data layer imports no simulator; the command line may.
    from robopolicy.data.regenerate import regenerate
    from robopolicy.sim.state_obs import StateObserver, parse_camera
    from robopolicy.task import load_task

    cameras = [parse_camera(c) for c in args.cameras or []]
    observer = StateObserver(load_task(args.task), cameras)
    provenance = {"task": args.task, "cameras": args.cameras or [], "replayed_with": observer.versions}
    try:
        _, out, report = regenerate(
            args.src, args.dst, observer, atol=args.atol, strict=args.strict, overwrite=args.overwrite,
            progress=not args.no_progress, provenance=provenance,
            options={"command": "robopolicy data regenerate " + " ".join(sys.argv[3:])},
        )
    finally:
        observer.close()
    print(f"replayed with {', '.join(f'{k} {v}' for k, v in observer.versions.items())}")
    print(report.render())
    print("written (validated: episodes, frames, shapes, dtypes match):\n" + out.render())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `convert` and `data` sub-commands to the main CLI."""
    fmt_names = list(FORMATS)
    writable = [f.name for f in FORMATS.values() if f.write]
    conv = subparsers.add_parser(
        "convert", help="convert a demonstration dataset between formats",
        description="Convert SRC to DST, validate the result, and print a summary. Output is written to a "
        "temporary path beside DST and renamed only when complete; nothing is left behind on error.",
        epilog=_formats_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    conv.add_argument("src", help="source dataset (file or directory)")
    conv.add_argument("dst", help="destination; .zarr/.zip → zarr, .hdf5 → robomimic, otherwise pass --to")
    conv.add_argument("--format", choices=fmt_names, help="source format (default: auto-detect)")
    conv.add_argument("--to", choices=writable, help="output format (default: from DST's suffix)")
    conv.add_argument("--filter-key", help="robomimic: only the demos listed in mask/<FILTER_KEY>")
    conv.add_argument("--recipe", help="rlds: TOML key map (which step features become which arrays, fps, split)")
    conv.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    conv.add_argument("--lerobot-images", choices=["video", "png"], default="video",
                      help="lerobot output: camera frames as H.264 mp4 (default) or lossless PNG in parquet")
    conv.add_argument("--lerobot-data-mb", type=float, default=100,
                      help="lerobot output: start a new parquet data file at this size (lerobot's default 100)")
    conv.add_argument("--lerobot-video-mb", type=float, default=200,
                      help="lerobot output: start a new mp4 file per camera at this size (lerobot's default 200)")
    conv.add_argument("--lerobot-episodes-mb", type=float,
                      help="lerobot output: start a new meta/episodes parquet file at this size "
                           "(default: the data files' limit, as lerobot)")
    conv.add_argument("--fps", type=float, help="frame rate, when the source does not record one")
    conv.add_argument("--task", help="lerobot output: task description for every episode")
    conv.add_argument("--no-progress", action="store_true", help="no progress bar")
    conv.set_defaults(func=_convert)

    data = subparsers.add_parser("data", help="inspect demonstration datasets",
                                 description="Inspect datasets in any supported format.")
    sub = data.add_subparsers(dest="data_command", required=True)
    ins = sub.add_parser("inspect", help="print episodes, frames, fps and per-key shape/dtype",
                         epilog=_formats_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    ins.add_argument("path", help="dataset file or directory")
    ins.add_argument("--format", choices=fmt_names, help="format (default: auto-detect)")
    ins.set_defaults(func=_inspect)
    st = sub.add_parser("stats", help="normalizer statistics (min/max/mean/std) of a zarr store, as JSON")
    st.add_argument("path", help="zarr store (convert other formats first)")
    st.add_argument("--obs-keys", nargs="+", help="low-dim observation keys (default: all low-dim)")
    st.add_argument("--split", choices=["train", "val", "all"], default="all")
    st.add_argument("--val-ratio", type=float, default=0.1)
    st.add_argument("--seed", type=int, default=0)
    st.set_defaults(func=_stats)
    rg = sub.add_parser(
        "regenerate", help="replay recorded simulator states and write fresh observations (robomimic's states-to-obs)",
        description="Replay the `states` of SRC (robomimic/robosuite hdf5 or a zarr store) in TASK's simulator and "
        "write DST (format from its suffix) with the observations rebuilt, plus any --cameras. Stored low-dim "
        "observations are compared with the replayed ones; the result is printed and kept in DST's provenance.",
    )
    rg.add_argument("src", help="dataset with recorded states")
    rg.add_argument("dst", help="destination; .zarr/.zip -> zarr, .hdf5 -> robomimic")
    rg.add_argument("--task", required=True, help="task name or tasks/*.toml path whose simulator replays the states")
    rg.add_argument("--cameras", nargs="+", metavar="NAME:HxW", help="extra camera observations, stored as NAME_image")
    rg.add_argument("--atol", type=float, default=1e-5, help="tolerance for replayed vs stored low-dim observations")
    rg.add_argument("--strict", action="store_true", help="fail (exit 2, nothing written) on a mismatch")
    rg.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    rg.add_argument("--no-progress", action="store_true", help="no progress bar")
    rg.set_defaults(func=_regenerate)
