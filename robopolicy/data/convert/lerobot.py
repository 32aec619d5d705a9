"""LeRobotDataset v3.0 and v2.1 (read), v3.0 (write).

Both keep `meta/info.json` (fps, features, path templates) and parquet frames with the columns
timestamp / frame_index / episode_index / index / task_index. Episode boundaries come from
`meta/episodes/*/*.parquet` (v3.0, many episodes per data and video file, each episode's video segment
starting at `videos/<key>/from_timestamp`) or `meta/episodes.jsonl` (v2.1, one file per episode).
"video" features are decoded from mp4 (AV1, H.264, ...) with PyAV at each frame's timestamp;
"image" features are PNG bytes in the parquet column (struct {bytes, path}).
"""
from __future__ import annotations

import io
import json
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from robopolicy.data.convert import lerobot_stats
from robopolicy.data.convert.base import Episode, Format, Source, SourceInfo, Summary
from robopolicy.data.replay_buffer import looks_like_rgb
from robopolicy.errors import DataError

DEFAULT_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
VISUAL = ("video", "image")
SUPPORTED = ("v2.0", "v2.1", "v3.0")
# lerobot 0.4's defaults (lerobot.datasets.utils): files per chunk, and the size limits of data and video files
# (lerobot splits the meta/episodes files at the data files' limit too).
CHUNKS_SIZE, DATA_FILE_MB, VIDEO_FILE_MB = 1000, 100, 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_BUFFER = 10  # lerobot's metadata_buffer_size: episode rows reach parquet ten at a time


def detect(path: Path) -> bool:
    info = path / "meta" / "info.json"
    if not info.is_file():
        return False
    try:
        return "codebase_version" in json.loads(info.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return True  # claims to be LeRobot; open() reports what is wrong with it


def _load_json(path: Path, root: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(root, str(path.relative_to(root)), "missing; expected LeRobotDataset metadata") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(root, str(path.relative_to(root)), f"not valid JSON: {exc}") from exc


def _read_parquet(path: Path, root: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except FileNotFoundError as exc:
        raise DataError(root, str(path.relative_to(root)), "missing; expected a parquet file") from exc
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for truncated files
        raise DataError(
            root, str(path.relative_to(root)), f"not a readable parquet file (truncated or corrupt?): {exc}"
        ) from exc


def decode_video(path: Path, timestamps: np.ndarray, fps: float, key: str) -> np.ndarray:
    """Frames of `path` at `timestamps` (seconds), as uint8 (T, H, W, 3); each must match a frame within 0.4/fps."""
    import av

    tol = 0.4 / fps
    out: list[np.ndarray | None] = [None] * len(timestamps)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            start = max(0.0, float(timestamps[0]) - 1.0 / fps)
            container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
            j = 0
            for frame in container.decode(stream):
                t = float(frame.time)
                if j < len(timestamps) and timestamps[j] < t - tol:
                    break
                while j < len(timestamps) and abs(timestamps[j] - t) <= tol:
                    out[j] = frame.to_ndarray(format="rgb24")
                    j += 1
                if j == len(timestamps):
                    break
    except (av.error.FFmpegError, IndexError) as exc:
        raise DataError(path, key, f"not a decodable video (truncated or corrupt?): {exc}") from exc
    missing = [float(timestamps[i]) for i, f in enumerate(out) if f is None]
    if missing:
        raise DataError(path, key,
                        f"no frame within {tol:.4f}s of timestamps {missing[:3]}; expected one frame per parquet row")
    return np.stack(out)  # type: ignore[arg-type]


def _step_shape(feature: dict) -> tuple[int, ...]:
    """A feature's per-step shape; lerobot keeps a one-value feature (shape [1]) as one number per step, a
    scalar column that its loader yields as a scalar, so it reads as shape ()."""
    shape = tuple(feature["shape"])
    return () if shape == (1,) else shape


def _column(table: Any, key: str, feature: dict, root: Path) -> np.ndarray:
    """A parquet column as (T, *shape) numpy, decoding PNG images."""
    col = table.column(key).combine_chunks()
    shape = _step_shape(feature)
    if feature["dtype"] == "image":
        from PIL import Image

        frames = []
        for item in col.to_pylist():
            data = item.get("bytes") if isinstance(item, dict) else item
            source = io.BytesIO(data) if data else root / item["path"]
            frames.append(np.asarray(Image.open(source).convert("RGB")))
        return np.stack(frames).reshape(len(frames), *shape)
    import pyarrow as pa

    if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        values = np.asarray(col.flatten().to_numpy(zero_copy_only=False))
    else:
        values = np.asarray(col.to_numpy(zero_copy_only=False))
    return values.astype(feature["dtype"], copy=False).reshape(len(col), *shape)


class LeRobotSource(Source):
    format = "lerobot"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        meta = _load_json(path / "meta" / "info.json", path)
        self.version = str(meta.get("codebase_version"))
        if self.version not in SUPPORTED:
            raise DataError(path, "meta/info.json:codebase_version", f"{self.version!r}; expected one of {SUPPORTED}")
        for field in ("fps", "features", "data_path"):
            if field not in meta:
                raise DataError(path, f"meta/info.json:{field}", "missing; expected LeRobotDataset info")
        self.meta = meta
        self.fps = float(meta["fps"])
        self.features = {
            k: v for k, v in meta["features"].items() if k not in DEFAULT_COLUMNS and v.get("dtype") != "string"
        }
        if "action" not in self.features:
            raise DataError(path, "meta/info.json:features.action", "missing; expected an action feature")
        self.episode_meta = self._load_episodes()
        names = {
            k: list(v["names"]) for k, v in self.features.items()
            if isinstance(v.get("names"), list) and v["dtype"] not in VISUAL
            and len(v["names"]) == int(np.prod(v["shape"]))
        }
        tasks = sorted({t for ep in self.episode_meta for t in (ep.get("tasks") or [])})
        self._info = SourceInfo(
            obs_keys=[k for k in self.features if k.startswith("observation.")],
            fps=self.fps,
            names=names,
            source={"format": f"lerobot {self.version}", "path": str(path), "robot_type": meta.get("robot_type"),
                    "tasks": tasks},
        )
        self._table_cache: tuple[Path, Any] | None = None

    def _load_episodes(self) -> list[dict]:
        if self.version == "v3.0":
            files = sorted((self.path / "meta" / "episodes").glob("*/*.parquet"))
            if not files:
                raise DataError(self.path, "meta/episodes", "no parquet files; expected the v3.0 episodes metadata")
            rows = []
            for f in files:
                table = _read_parquet(f, self.path)
                rows += table.drop_columns([c for c in table.column_names if c.startswith("stats/")]).to_pylist()
        else:
            lines = (self.path / "meta" / "episodes.jsonl")
            if not lines.is_file():
                raise DataError(self.path, "meta/episodes.jsonl", "missing; expected the v2.x episodes metadata")
            try:
                rows = [json.loads(line) for line in lines.read_text().splitlines() if line.strip()]
            except json.JSONDecodeError as exc:
                raise DataError(self.path, "meta/episodes.jsonl", f"not valid JSON lines: {exc}") from exc
        return sorted(rows, key=lambda r: r["episode_index"])

    @property
    def info(self) -> SourceInfo:
        return self._info

    def summary(self) -> Summary:
        feats = {
            k: (_step_shape(v), "uint8" if v["dtype"] in VISUAL else str(np.dtype(v["dtype"])))
            for k, v in self.features.items()
        }
        return Summary(
            str(self.path), f"lerobot {self.version}", int(self.meta.get("total_episodes", len(self.episode_meta))),
            int(self.meta.get("total_frames", sum(int(e["length"]) for e in self.episode_meta))), self.fps, feats,
        )

    def _table(self, file: Path) -> Any:
        if self._table_cache is None or self._table_cache[0] != file:
            self._table_cache = (file, _read_parquet(file, self.path))
        return self._table_cache[1]

    def _frames(self, ep: dict) -> Any:
        import pyarrow.compute as pc

        index = int(ep["episode_index"])
        if self.version == "v3.0":
            rel = self.meta["data_path"].format(chunk_index=ep["data/chunk_index"], file_index=ep["data/file_index"])
        else:
            chunk = index // int(self.meta.get("chunks_size", 1000))
            rel = self.meta["data_path"].format(episode_chunk=chunk, episode_index=index)
        table = self._table(self.path / rel)
        for key in (*self.features, "timestamp", "episode_index"):
            if key not in table.column_names and self.features.get(key, {}).get("dtype") != "video":
                raise DataError(self.path, f"{rel}:{key}", "missing column; expected it from meta/info.json features")
        rows = table.filter(pc.equal(table["episode_index"], index))
        if rows.num_rows != int(ep["length"]):
            raise DataError(self.path, f"{rel}:episode {index}",
                            f"{rows.num_rows} rows; the episodes metadata says {ep['length']}")
        return rows, rel

    def episodes(self) -> Iterator[tuple[str, Episode]]:
        for ep in self.episode_meta:
            rows, rel = self._frames(ep)
            index = int(ep["episode_index"])
            stamps = np.asarray(rows["timestamp"].to_numpy(), dtype=np.float64)
            episode: Episode = {}
            for key, feature in self.features.items():
                if feature["dtype"] == "video":
                    episode[key] = self._video(key, ep, stamps)
                else:
                    episode[key] = _column(rows, key, feature, self.path)
            yield f"episode {index} ({rel})", episode

    def _video(self, key: str, ep: dict, stamps: np.ndarray) -> np.ndarray:
        index = int(ep["episode_index"])
        template = self.meta.get("video_path")
        if not template:
            raise DataError(self.path, "meta/info.json:video_path", f"missing; feature {key} is a video")
        if self.version == "v3.0":
            rel = template.format(video_key=key, chunk_index=ep[f"videos/{key}/chunk_index"],
                                  file_index=ep[f"videos/{key}/file_index"])
            stamps = stamps + float(ep[f"videos/{key}/from_timestamp"])
        else:
            chunk = index // int(self.meta.get("chunks_size", 1000))
            rel = template.format(episode_chunk=chunk, video_key=key, episode_index=index)
        file = self.path / rel
        if not file.is_file():
            raise DataError(self.path, rel, f"missing; expected the video of {key} for episode {index}")
        return decode_video(file, stamps, self.fps, key)


def open_lerobot(path: Path) -> LeRobotSource:
    return LeRobotSource(path)


# ---- writing (v3.0) -----------------------------------------------------------------------------
def _lerobot_key(key: str, kind: str, info: SourceInfo) -> str:
    if key == info.action_key:
        return "action"
    if key not in info.obs_keys or key.startswith("observation."):
        return key
    return f"observation.images.{key}" if kind == "rgb" else f"observation.{key}"


class _VideoWriter:
    """One H.264 mp4 of one camera; episodes are appended back to back, as v3.0 does."""

    def __init__(self, path: Path, fps: float, height: int, width: int, key: str) -> None:
        import av

        if height % 2 or width % 2:
            raise DataError(path, key,
                            f"{height}x{width} frames; H.264 (yuv420p) needs even sizes, use --lerobot-images png")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), "w")
        rate = Fraction(fps).limit_denominator(1000)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.codec_context.time_base = 1 / rate
        self.stream.options = {"crf": "18", "g": "2"}
        self.n = 0
        self.bytes = 0  # encoded so far: what the file holds, short of the container's headers

    def add(self, frames: np.ndarray) -> None:
        import av

        for img in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[..., :3]), format="rgb24")
            frame.pts = self.n
            self.n += 1
            self._mux(self.stream.encode(frame))

    def _mux(self, packets: list) -> None:
        self.bytes += sum(p.size for p in packets)
        self.container.mux(packets)

    def close(self) -> None:
        self._mux(self.stream.encode())
        self.container.close()


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(buf, format="PNG")
    return buf.getvalue()


def _tasks_table(task: str) -> Any:
    """meta/tasks.parquet as lerobot writes it: a pandas frame indexed by the task string."""
    import pyarrow as pa

    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    table = pa.table({"task_index": pa.array([0], pa.int64()), "__index_level_0__": pa.array([task], pa.string())})
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


class _FileSplit:
    """Which chunk/file the next episode goes to, split the way lerobot 0.4 splits its data files: a new file
    once the current file's size plus the episode's expected size (the file's average bytes per frame times
    the episode's frames) reaches the limit; after `chunks_size` files the index moves to the next chunk.
    lerobot measures a video episode after encoding it to a temporary file; the writer here streams frames
    into the open file and uses the same average-per-frame estimate for videos. For the episodes metadata a
    "frame" is one episode's row."""

    def __init__(self, limit_mb: float, chunks_size: int) -> None:
        self.limit_mb, self.chunks_size = limit_mb, chunks_size
        self.chunk = self.file = self.frames = 0

    def starts_new_file(self, size_bytes: int, n: int) -> bool:
        """Advance the indices when an `n`-frame episode would reach the limit of a non-empty file."""
        size_mb = size_bytes / 2**20
        if not self.frames or size_mb + size_mb / self.frames * n < self.limit_mb:
            return False
        self.file += 1
        if self.file == self.chunks_size:
            self.chunk, self.file = self.chunk + 1, 0
        self.frames = 0
        return True

    def path(self, template: str, **keys: str) -> str:
        return template.format(chunk_index=self.chunk, file_index=self.file, **keys)


class _EpisodesWriter:
    """meta/episodes/chunk-XXX/file-YYY.parquet, written as lerobot 0.4 writes them: rows reach the open file
    EPISODES_BUFFER at a time, a batch starts a new file once the file's size plus the batch's expected size
    (the file's mean bytes per row times the batch's rows) reaches the limit, and every row names its file in
    meta/episodes/chunk_index / file_index. The size is that of the open file, as lerobot measures it: parquet's
    footer (a few hundred bytes per column and row group) is written on close and comes on top. (lerobot 0.4.4
    checks before each episode, but its file grows only a batch at a time, and it estimates the next row by
    dividing the file's size by the latest episode index and multiplying by the episode's frame count.)"""

    def __init__(self, root: Path, limit_mb: float, chunks_size: int) -> None:
        self.root = root
        self.split = _FileSplit(limit_mb, chunks_size)
        self.pending: list[dict] = []
        self.schema: Any = None  # the first batch's schema, kept for every file: lerobot loads them as one table
        self.writer: Any = None
        self.path: Path | None = None
        self.n = 0

    def add(self, row: dict) -> None:
        self.pending.append(row)
        self.n += 1
        if len(self.pending) == EPISODES_BUFFER:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.pending:
            return
        if self.writer is not None and self.path is not None and self.split.starts_new_file(
            self.path.stat().st_size, len(self.pending)
        ):
            self.writer.close()
            self.writer = None
        for row in self.pending:
            row.update({"meta/episodes/chunk_index": self.split.chunk, "meta/episodes/file_index": self.split.file})
        table = pa.Table.from_pylist(self.pending, schema=self.schema)
        if self.writer is None:
            self.path = self.root / self.split.path(EPISODES_PATH)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.schema = table.schema
            self.writer = pq.ParquetWriter(self.path, table.schema)
        self.writer.write_table(table)
        self.split.frames += len(self.pending)
        self.pending = []

    def close(self) -> None:
        """Write the last, partial batch and close the open file (also on failure: the output is dropped then)."""
        self._flush()
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def write_lerobot(source: Source, episodes: Iterator[Episode], tmp: Path, options: dict[str, Any]) -> dict[str, str]:
    """Write a LeRobotDataset v3.0: parquet data files and one mp4 series per camera (or PNG images), split at
    lerobot's size limits (options lerobot_data_mb / lerobot_video_mb, default 100 / 200 MB as lerobot's), the
    episodes metadata split likewise (lerobot_episodes_mb, default the data files' limit as lerobot's), each
    episode's statistics in its row and their aggregate in meta/stats.json (see lerobot_stats; no frame, and no
    episode row once written, is kept)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    info = source.info
    fps = info.fps or float(options.get("fps") or 0)
    if not fps:
        raise DataError(source.path, "fps", "unknown; pass --fps to export to LeRobot, which needs a frame rate")
    use_video = options.get("lerobot_images", "video") == "video"
    task = options.get("task") or (info.source.get("tasks") or [""])[0] or "robopolicy export"
    data_mb = float(options.get("lerobot_data_mb") or DATA_FILE_MB)
    video_mb = float(options.get("lerobot_video_mb") or VIDEO_FILE_MB)
    episodes_mb = float(options.get("lerobot_episodes_mb") or data_mb)
    chunks_size = int(options.get("lerobot_chunks_size") or CHUNKS_SIZE)
    tmp.mkdir()
    mapping: dict[str, str] = {}
    features: dict[str, dict] = {}
    writers: dict[str, _VideoWriter] = {}
    splits: dict[str, _FileSplit] = {}
    data_split = _FileSplit(data_mb, chunks_size)
    data_writer: Any = None
    data_path: Path | None = None
    episodes_meta = _EpisodesWriter(tmp, episodes_mb, chunks_size)
    stats: dict[str, lerobot_stats.Aggregate] = {}
    index = 0
    try:
        for e, episode in enumerate(episodes):
            n = len(episode[info.action_key])
            if not features:
                for key, arr in episode.items():
                    if arr.shape[1:] == (1,):
                        raise DataError(source.path, key, "per-step shape (1,); expected () or 2+ values: lerobot "
                                        "keeps a one-value feature as a per-step scalar, so (T, 1) would not "
                                        "come back as written")
                    kind = "rgb" if looks_like_rgb(arr.shape[1:], arr.dtype) else "low_dim"
                    name = _lerobot_key(key, kind, info)
                    mapping[key] = name
                    dtype = ("video" if use_video else "image") if kind == "rgb" else str(arr.dtype)
                    features[name] = {"dtype": dtype, "shape": list(arr.shape[1:]) or [1], "names": info.names.get(key)}
                    if dtype in VISUAL:
                        features[name]["names"] = ["height", "width", "channels"]
                    if dtype == "video":
                        splits[name] = _FileSplit(video_mb, chunks_size)
            columns: dict[str, Any] = {}
            if data_writer is not None and data_path is not None and data_split.starts_new_file(
                data_path.stat().st_size, n
            ):
                data_writer.close()
                data_writer = None
            row = {"episode_index": e, "tasks": [task], "length": n, "data/chunk_index": data_split.chunk,
                   "data/file_index": data_split.file, "dataset_from_index": index, "dataset_to_index": index + n}
            for key, arr in episode.items():
                name, feat = mapping[key], features[mapping[key]]
                if feat["dtype"] == "video":
                    split = splits[name]
                    if name in writers and split.starts_new_file(writers[name].bytes, n):
                        writers.pop(name).close()
                    if name not in writers:
                        video = tmp / split.path(VIDEO_PATH, video_key=name)
                        writers[name] = _VideoWriter(video, fps, arr.shape[1], arr.shape[2], name)
                    start = writers[name].n / fps
                    writers[name].add(arr)
                    split.frames += n
                    row.update({f"videos/{name}/chunk_index": split.chunk, f"videos/{name}/file_index": split.file,
                                f"videos/{name}/from_timestamp": start, f"videos/{name}/to_timestamp": start + n / fps})
                elif feat["dtype"] == "image":
                    columns[name] = pa.array([{"bytes": _png(img), "path": None} for img in arr],
                                             pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
                elif arr.ndim == 1:
                    columns[name] = pa.array(arr)
                else:
                    flat = arr.reshape(n, -1)
                    columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])
            frame_index = np.arange(n, dtype=np.int64)
            defaults: dict[str, np.ndarray] = {
                "timestamp": (frame_index / fps).astype(np.float32), "frame_index": frame_index,
                "episode_index": np.full(n, e, dtype=np.int64), "index": np.arange(index, index + n, dtype=np.int64),
                "task_index": np.zeros(n, dtype=np.int64),
            }
            columns.update({col: pa.array(values) for col, values in defaults.items()})
            # lerobot's order: the features, then the default columns.
            for name, arr in [(mapping[k], a) for k, a in episode.items()] + list(defaults.items()):
                ep_stats = lerobot_stats.episode_stats(arr, features.get(name, {}).get("dtype") in VISUAL)
                stats.setdefault(name, lerobot_stats.Aggregate()).add(ep_stats)
                row.update(lerobot_stats.columns(name, ep_stats))
            table = pa.table(columns)
            if data_writer is None:
                data_path = tmp / data_split.path(DATA_PATH)
                data_path.parent.mkdir(parents=True, exist_ok=True)
                data_writer = pq.ParquetWriter(data_path, table.schema)
            data_writer.write_table(table)
            data_split.frames += n
            episodes_meta.add(row)
            index += n
    finally:
        for w in writers.values():
            w.close()
        if data_writer is not None:
            data_writer.close()
        episodes_meta.close()
    if not episodes_meta.n:
        raise DataError(source.path, None, "no episodes to write; expected at least one")
    for col in DEFAULT_COLUMNS:
        features[col] = {"dtype": "float32" if col == "timestamp" else "int64", "shape": [1], "names": None}
    for name in splits:
        h, wd, c = features[name]["shape"]
        features[name]["info"] = {"video.height": h, "video.width": wd, "video.codec": "h264",
                                  "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                                  "video.channels": c, "has_audio": False}
    pq.write_table(_tasks_table(task), tmp / "meta/tasks.parquet")
    stats_json = {name: {k: v.tolist() for k, v in acc.result().items()} for name, acc in stats.items()}
    (tmp / "meta/stats.json").write_text(json.dumps(stats_json, indent=2))
    info_json = {
        "codebase_version": "v3.0", "robot_type": info.source.get("robot_type"), "total_episodes": episodes_meta.n,
        "total_frames": index, "total_tasks": 1, "chunks_size": chunks_size, "data_files_size_in_mb": data_mb,
        "video_files_size_in_mb": video_mb, "fps": fps if fps != int(fps) else int(fps),
        "splits": {"train": f"0:{episodes_meta.n}"},
        "data_path": DATA_PATH, "video_path": VIDEO_PATH if splits else None,
        "features": features, "robopolicy_source": info.source,
    }
    (tmp / "meta/info.json").write_text(json.dumps(info_json, indent=4, default=str))
    return mapping


FORMAT = Format(
    name="lerobot",
    help="LeRobotDataset v3.0 / v2.1 directory (meta/info.json, parquet, mp4); written as v3.0",
    detect=detect,
    open=open_lerobot,
    write=write_lerobot,
)
