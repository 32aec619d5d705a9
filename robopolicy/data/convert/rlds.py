"""RLDS datasets as tensorflow-datasets writes them (Open X-Embodiment, DROID, BridgeData), read without TensorFlow.

A TFDS dataset directory holds `dataset_info.json` (splits, shard lengths, file template), `features.json`
(the feature tree) and TFRecord shards, one `tf.train.Example` per episode with the `steps` sequence
flattened per feature: `steps/action` is a float list of T*7 values, `steps/observation/image` a list of
T encoded PNG/JPEG images, booleans are int64. The shards are read record by record with the `tfrecord`
package's framing reader and its copy of TensorFlow's `Example` proto, so memory holds one episode at a time.

A key map (TOML recipe, `--recipe FILE`) picks which step features become which arrays:

    split = "train"            # default "train"
    fps = 10.0                 # RLDS records no rate
    obs = ["image", "state"]   # default: the arrays taken from observation/*
    [arrays]                   # array name = step feature path, or a list of paths to concatenate
    image = "observation/image"
    state = "observation/state"
    action = ["action/world_vector", "action/gripper"]
    [convention]               # optional, as in the zarr attrs
    mode = "delta"

Without a recipe every non-text step feature is kept (observation/X as X, others as their path with dots),
except is_first/is_last, which are checked against the episode boundaries and left implied by them.
Text step features (language instructions) and episode_metadata/* are per-episode metadata: they land in
the source provenance as `episode_metadata`, one entry per episode.
"""
from __future__ import annotations

import io
import json
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robopolicy.data.convert.base import Episode, Format, Source, SourceInfo, Summary
from robopolicy.errors import DataError

_IMPLIED = ("is_first", "is_last")


@dataclass(frozen=True)
class Feature:
    """One leaf of features.json: `kind` is tensor, image or text; `per_step` for leaves under steps/."""

    path: str
    kind: str
    dtype: str
    shape: tuple[int, ...]
    encoding: str
    per_step: bool


def _leaves(node: dict, path: str, per_step: bool, file: Path) -> list[Feature]:
    """Flatten a TFDS feature tree (FeaturesDict, Dataset/Sequence, Tensor, Scalar, Image, Text, ClassLabel)."""
    if "featuresDict" in node:
        return [f for key, sub in node["featuresDict"]["features"].items()
                for f in _leaves(sub, f"{path}/{key}" if path else key, per_step, file)]
    if "sequence" in node:
        if per_step:
            raise DataError(file, path, "a sequence inside steps; expected one level of steps (RLDS)")
        return _leaves(node["sequence"]["feature"], path, True, file)
    for kind in ("tensor", "image"):
        if kind in node:
            spec = node[kind]
            shape = tuple(int(d) for d in spec.get("shape", {}).get("dimensions", []))
            if any(d < 0 for d in shape):
                raise DataError(file, path, f"variable shape {shape} per step; expected a fixed shape")
            encoding = spec.get("encodingFormat", "png") if kind == "image" else spec.get("encoding", "none")
            if kind == "tensor" and encoding not in ("none", "bytes"):
                raise DataError(file, path, f"tensor encoding {encoding!r}; expected 'none' or 'bytes'")
            return [Feature(path, kind, spec.get("dtype", "uint8"), shape, encoding, per_step)]
    if "text" in node:
        return [Feature(path, "text", "str", (), "utf-8", per_step)]
    if "classLabel" in node:
        return [Feature(path, "tensor", "int64", (), "none", per_step)]
    raise DataError(file, path, f"unsupported feature {node.get('pythonClassName')}; expected Tensor, Image, Text")


def _dataset_dir(path: Path) -> Path:
    """The directory holding dataset_info.json: `path` itself or its latest version subdirectory."""
    if (path / "dataset_info.json").is_file():
        return path
    versions = sorted((p for p in path.glob("*/dataset_info.json")),
                      key=lambda p: tuple(int(x) if x.isdigit() else 0 for x in p.parent.name.split(".")))
    return versions[-1].parent if versions else path


def detect(path: Path) -> bool:
    root = _dataset_dir(path) if path.is_dir() else path
    return (root / "dataset_info.json").is_file() and (root / "features.json").is_file()


def _load_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text())
    except FileNotFoundError as exc:
        raise DataError(file, None, "missing; expected a TFDS dataset directory") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(file, None, f"not valid JSON: {exc}") from exc


@dataclass
class Recipe:
    """The key map: which arrays to build from which step features (see the module docstring)."""

    arrays: dict[str, list[str]]
    obs: list[str]
    split: str = "train"
    fps: float | None = None
    convention: dict[str, str] | None = None
    path: str | None = None


def load_recipe(file: Path | None, features: dict[str, Feature], features_file: Path) -> Recipe:
    """Parse and check a recipe against the dataset's features; None gives the default key map."""
    steps = {p.removeprefix("steps/"): f for p, f in features.items() if f.per_step and f.kind != "text"}
    if file is None:
        arrays: dict[str, list[str]] = {}
        for path in steps:
            if path in _IMPLIED:
                continue
            name = path.removeprefix("observation/").replace("/", ".")
            if name in arrays:
                raise DataError(features_file, path, f"default array name {name!r} is taken twice; pass --recipe")
            arrays[name] = [path]
        obs = [n for n, paths in arrays.items() if paths[0].startswith("observation/")]
        return Recipe(arrays, obs)
    try:
        raw = tomllib.loads(file.read_text())
    except FileNotFoundError as exc:
        raise DataError(file, None, "missing; expected an RLDS key-map recipe (TOML)") from exc
    except tomllib.TOMLDecodeError as exc:
        raise DataError(file, None, f"not valid TOML: {exc}") from exc
    unknown = set(raw) - {"split", "fps", "obs", "arrays", "convention", "name", "description"}
    if unknown:
        raise DataError(file, sorted(unknown)[0], "unknown field; expected split, fps, obs, arrays, convention")
    if not isinstance(raw.get("arrays"), dict) or not raw["arrays"]:
        raise DataError(file, "arrays", "missing; expected a table of array name = step feature path(s)")
    arrays = {}
    for name, value in raw["arrays"].items():
        paths = [value] if isinstance(value, str) else value
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths) or not paths:
            raise DataError(file, f"arrays.{name}", f"{value!r}; expected a feature path or a list of them")
        for p in paths:
            if p.removeprefix("steps/") not in steps:
                raise DataError(file, f"arrays.{name}", f"{p!r} is not a step feature of {features_file}; "
                                                         f"expected one of {sorted(steps)}")
        arrays[name] = [p.removeprefix("steps/") for p in paths]
    if "action" not in arrays:
        raise DataError(file, "arrays.action", "missing; expected the array that holds the actions")
    obs = raw.get("obs", [n for n, paths in arrays.items() if paths[0].startswith("observation/")])
    for name in obs:
        if name not in arrays:
            raise DataError(file, "obs", f"{name!r} is not an array of the recipe; expected one of {sorted(arrays)}")
    for name, paths in arrays.items():
        kinds = {steps[p].kind for p in paths}
        if len(paths) > 1 and kinds != {"tensor"}:
            raise DataError(file, f"arrays.{name}", "concatenates images; expected only tensor features in a list")
    fps = raw.get("fps")
    return Recipe(arrays, list(obs), str(raw.get("split", "train")), float(fps) if fps else None,
                  raw.get("convention"), str(file))


def _values(feature: Any, spec: Feature, where: tuple[Path, str]) -> Any:
    kind = feature.WhichOneof("kind")
    want = "bytes_list" if spec.kind in ("image", "text") or spec.encoding == "bytes" else (
        "float_list" if np.issubdtype(np.dtype(spec.dtype), np.floating) else "int64_list")
    if kind is not None and kind != want:
        raise DataError(*where, f"stored as {kind}; features.json implies {want}")
    return getattr(feature, want).value


def _decode_image(blob: bytes, spec: Feature, where: tuple[Path, str]) -> np.ndarray:
    from PIL import Image

    try:
        img = np.asarray(Image.open(io.BytesIO(blob)))
    except Exception as exc:  # PIL raises several types for undecodable data
        raise DataError(*where, f"not a decodable {spec.encoding} image: {exc}") from exc
    if img.ndim == 2:
        img = img[..., None]
    if img.shape != spec.shape:
        raise DataError(*where, f"image of shape {img.shape}; features.json says {spec.shape}")
    return img.astype(spec.dtype, copy=False)


def decode_step_feature(feature: Any, spec: Feature, where: tuple[Path, str]) -> np.ndarray:
    """One flattened step feature of an episode record as a (T, *shape) array of the declared dtype."""
    values = _values(feature, spec, where)
    if spec.kind == "image":
        return np.stack([_decode_image(b, spec, where) for b in values]) if len(values) else np.zeros((0, *spec.shape))
    dtype = np.dtype(spec.dtype)
    size = int(np.prod(spec.shape, dtype=np.int64))
    if spec.encoding == "bytes":
        flat = np.frombuffer(b"".join(values), dtype=dtype)
    else:
        flat = np.asarray(values, dtype=np.float32 if dtype.kind == "f" else np.int64).astype(dtype, copy=False)
    if size == 0 or flat.size % size:
        raise DataError(*where, f"{flat.size} values; expected a multiple of {size} (shape {spec.shape})")
    return flat.reshape(-1, *spec.shape)


class RldsSource(Source):
    format = "rlds"

    def __init__(self, path: Path, recipe: str | Path | None = None) -> None:
        super().__init__(path)
        self.root = _dataset_dir(path)
        info = _load_json(self.root / "dataset_info.json")
        self.features_file = self.root / "features.json"
        tree = _load_json(self.features_file)
        self.features = {f.path: f for f in _leaves(tree, "", False, self.features_file)}
        if not any(f.per_step for f in self.features.values()):
            raise DataError(self.features_file, "steps", "missing; expected an RLDS steps sequence")
        self.recipe = load_recipe(Path(recipe) if recipe else None, self.features, self.features_file)
        if info.get("fileFormat", "tfrecord") != "tfrecord":
            raise DataError(self.root / "dataset_info.json", "fileFormat", f"{info['fileFormat']!r}; expected tfrecord")
        self.shards, self.shard_lengths = self._shards(info)
        self._info = SourceInfo(
            obs_keys=self.recipe.obs,
            fps=self.recipe.fps,
            convention=dict(self.recipe.convention or {"mode": "unknown", "rotation": "unknown"}),
            source={"format": "rlds", "path": str(self.root), "name": info.get("name"), "version": info.get("version"),
                    "split": self.recipe.split, "recipe": self.recipe.path, "episode_metadata": []},
        )

    def _shards(self, info: dict) -> tuple[list[Path], list[int]]:
        info_file = self.root / "dataset_info.json"
        splits = {s.get("name"): s for s in info.get("splits", [])}
        if self.recipe.split not in splits:
            raise DataError(info_file, f"splits.{self.recipe.split}", f"missing; the dataset has {sorted(splits)}")
        split = splits[self.recipe.split]
        lengths = [int(n) for n in split.get("shardLengths", [])]
        template = split.get("filepathTemplate", "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}")
        names = []
        for i in range(len(lengths)):
            name = template.replace("{DATASET}", str(info.get("name"))).replace("{SPLIT}", self.recipe.split)
            name = name.replace("{FILEFORMAT}", "tfrecord").replace("{SHARD_X_OF_Y}", f"{i:05d}-of-{len(lengths):05d}")
            names.append(re.sub(r"\{SHARD_INDEX\}", f"{i:05d}", name))
        shards = [self.root / n for n in names]
        for shard in shards:
            if not shard.is_file():
                raise DataError(shard, None, f"missing; {info_file.name} lists {len(shards)} shards of split "
                                             f"{self.recipe.split!r}")
        return shards, lengths

    @property
    def info(self) -> SourceInfo:
        return self._info

    def summary(self) -> Summary:
        steps = {p.removeprefix("steps/"): f for p, f in self.features.items() if f.per_step}
        feats = {}
        for name, paths in self.recipe.arrays.items():
            specs = [steps[p] for p in paths]
            if len(specs) == 1:
                feats[name] = (specs[0].shape, specs[0].dtype)
            else:
                width = sum(int(np.prod(s.shape, dtype=np.int64)) for s in specs)
                feats[name] = ((width,), str(np.result_type(*[np.dtype(s.dtype) for s in specs], np.float32)))
        return Summary(str(self.root), "rlds (tfds tfrecord)", sum(self.shard_lengths), None, self._info.fps, feats)

    def episodes(self) -> Iterator[tuple[str, Episode]]:
        from tfrecord import example_pb2
        from tfrecord.reader import tfrecord_iterator

        for shard, expected in zip(self.shards, self.shard_lengths, strict=True):
            n = 0
            records = tfrecord_iterator(str(shard))
            while True:
                try:
                    record = next(records)
                except StopIteration:
                    break
                except RuntimeError as exc:  # the framing reader's short reads
                    raise DataError(shard, f"record {n}", f"truncated shard: {exc}") from exc
                example = example_pb2.Example()
                try:
                    example.ParseFromString(bytes(record))
                except Exception as exc:  # protobuf's DecodeError
                    raise DataError(shard, f"record {n}", f"not a tf.train.Example (corrupt shard?): {exc}") from exc
                yield f"{shard.name}:record {n}", self._episode(example.features.feature, shard, n)
                n += 1
            if n != expected:
                raise DataError(shard, None, f"{n} episodes; dataset_info.json says {expected} (truncated shard?)")

    def _episode(self, fields: Any, shard: Path, n: int) -> Episode:
        def get(path: str) -> np.ndarray:
            where = (shard, f"record {n}/{path}")
            if path not in fields:
                raise DataError(*where, "missing from the record; expected it from features.json")
            return decode_step_feature(fields[path], self.features[path], where)

        episode: Episode = {}
        for name, paths in self.recipe.arrays.items():
            parts = [get(f"steps/{p}") for p in paths]
            if len(parts) == 1:
                episode[name] = parts[0]
            else:
                lengths = {len(p) for p in parts}
                if len(lengths) > 1:
                    raise DataError(shard, f"record {n}/{name}", f"parts of {sorted(lengths)} rows; expected one")
                episode[name] = np.concatenate([p.reshape(len(p), -1).astype(np.float32) for p in parts], axis=1)
        self._check_boundaries(fields, shard, n, get)
        self._info.source["episode_metadata"].append(self._metadata(fields, shard, n))
        return episode

    def _check_boundaries(self, fields: Any, shard: Path, n: int, get: Any) -> None:
        for flag, want in (("is_first", 0), ("is_last", -1)):
            if f"steps/{flag}" not in self.features or f"steps/{flag}" not in fields:
                continue
            values = get(f"steps/{flag}").astype(bool)
            expected = np.zeros(len(values), bool)
            if len(values):
                expected[want] = True
            if not np.array_equal(values, expected):
                which = "first" if want == 0 else "last"
                raise DataError(shard, f"record {n}/steps/{flag}",
                                f"true at steps {np.flatnonzero(values).tolist()}; expected only the {which} step")

    def _metadata(self, fields: Any, shard: Path, n: int) -> dict[str, Any]:
        """Text step features (constant per episode in RLDS) and episode_metadata/* of one episode."""
        meta: dict[str, Any] = {}
        for path, spec in self.features.items():
            if path not in fields or (spec.per_step and spec.kind != "text"):
                continue
            values = _values(fields[path], spec, (shard, f"record {n}/{path}"))
            if spec.kind == "text":
                texts = list(dict.fromkeys(v.decode("utf-8", "replace") for v in values))
                value: Any = texts[0] if len(texts) == 1 else texts
            elif spec.kind == "image":
                continue
            else:
                value = decode_step_feature(fields[path], spec, (shard, f"record {n}/{path}")).tolist()
                value = value[0] if len(value) == 1 else value
            meta[path.removeprefix("steps/").removeprefix("episode_metadata/")] = value
        return meta


def open_rlds(path: Path, recipe: str | Path | None = None) -> RldsSource:
    return RldsSource(path, recipe)


FORMAT = Format(
    name="rlds",
    help="RLDS / TFDS dataset directory (dataset_info.json, features.json, TFRecord shards), --recipe maps keys; read",
    detect=detect,
    open=open_rlds,
)
