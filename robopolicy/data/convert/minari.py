"""Minari datasets, hdf5 or arrow storage (`<dataset>/data/metadata.json` names which).

Each episode has T actions/rewards/terminations/truncations and T+1 observations (the last one follows the
final action). A step-indexed store pairs observation t with action t, so the final observation of every
episode is dropped; this is recorded in the provenance. Dict observation spaces become
`observation.<key>`, a Box space `observation`. Image Boxes stored as JPEG (Minari's default when it
knows the space) are decoded; raw pixel arrays are read as they are.
"""
from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from robopolicy.data.convert.base import Episode, Format, Source, SourceInfo, Summary, features_of
from robopolicy.errors import DataError

_STEP_KEYS = {"rewards": "reward", "terminations": "terminated", "truncations": "truncated"}


def _data_dir(path: Path) -> Path:
    return path / "data" if (path / "data" / "metadata.json").is_file() else path


def detect(path: Path) -> bool:
    meta = _data_dir(path) / "metadata.json"
    if not path.is_dir() or not meta.is_file():
        return False
    try:
        return "data_format" in json.loads(meta.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def _leaves(space: dict, prefix: str) -> dict[str, dict]:
    """Flatten a serialized gymnasium space into {native key: Box/Discrete description}."""
    kind = space.get("type")
    if kind == "Dict":
        out: dict[str, dict] = {}
        for key, sub in space["subspaces"].items():
            out.update(_leaves(sub, f"{prefix}.{key}"))
        return out
    if kind in ("Box", "Discrete", "MultiDiscrete", "MultiBinary"):
        return {prefix: space}
    raise DataError(prefix, None, f"Minari space type {kind!r} is not supported; expected Box, Discrete or Dict")


def _is_image(space: dict) -> bool:
    shape = space.get("shape") or []
    return space.get("type") == "Box" and space.get("dtype") == "uint8" and len(shape) == 3 and shape[-1] in (1, 3, 4)


def _decode_jpeg(blobs: Any) -> np.ndarray:
    from PIL import Image

    raw = (b if isinstance(b, bytes) else np.asarray(b).tobytes() for b in blobs)
    return np.stack([np.asarray(Image.open(io.BytesIO(data))) for data in raw])


class MinariSource(Source):
    format = "minari"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.data = _data_dir(path)
        try:
            self.meta = json.loads((self.data / "metadata.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(
                path, "data/metadata.json", f"missing or not valid JSON; expected Minari metadata ({exc})"
            ) from exc
        self.storage = self.meta.get("data_format")
        if self.storage not in ("hdf5", "arrow"):
            raise DataError(path, "data/metadata.json:data_format", f"{self.storage!r}; expected 'hdf5' or 'arrow'")
        spaces = {k: self.meta.get(k) for k in ("observation_space", "action_space")}
        for key, value in spaces.items():
            if value is None:
                raise DataError(path, f"data/metadata.json:{key}", "missing; expected a serialized gymnasium space")
        obs_space = spaces["observation_space"]
        self.obs_space = _leaves(json.loads(obs_space) if isinstance(obs_space, str) else obs_space, "observation")
        self.ids = self._episode_ids()
        kept = {k: v for k, v in self.meta.items() if k not in ("observation_space", "action_space")}
        self._info = SourceInfo(
            obs_keys=list(self.obs_space),
            source={"format": f"minari {self.storage}", "path": str(path), **kept,
                    "final_observation": "dropped: Minari stores T+1 observations per T actions"},
        )
        self._first: Episode | None = None

    def _episode_ids(self) -> list[int]:
        if self.storage == "hdf5":
            file = self.data / "main_data.hdf5"
            try:
                with h5py.File(file, "r") as f:
                    names = [k for k in f if k.startswith("episode_")]
            except OSError as exc:
                raise DataError(file, None, f"not a readable HDF5 file (truncated or corrupt?): {exc}") from exc
            return sorted(int(n.removeprefix("episode_")) for n in names)
        return sorted(int(p.name) for p in self.data.iterdir() if p.is_dir() and p.name.isdigit())

    @property
    def info(self) -> SourceInfo:
        return self._info

    def summary(self) -> Summary:
        if self._first is None and self.ids:
            self._first = self._episode(self.ids[0])[1]
        feats = features_of(self._first) if self._first else {}
        n_frames = int(self.meta.get("total_steps", 0))
        n_episodes = int(self.meta.get("total_episodes", len(self.ids)))
        return Summary(str(self.path), f"minari {self.storage}", n_episodes, n_frames, None, feats)

    def episodes(self) -> Iterator[tuple[str, Episode]]:
        for i in self.ids:
            yield self._episode(i)

    def _episode(self, i: int) -> tuple[str, Episode]:
        raw, label = self._read_hdf5(i) if self.storage == "hdf5" else self._read_arrow(i)
        n = len(raw["action"])
        episode: Episode = {"action": raw["action"]}
        for key in self.obs_space:
            obs = raw[key]
            if len(obs) != n + 1:
                raise DataError(self.path, f"{label}/{key}",
                                f"{len(obs)} observations; expected {n + 1} (one more than the {n} actions)")
            episode[key] = obs[:-1]
        episode.update({native: raw[native] for native in _STEP_KEYS.values() if native in raw})
        return label, episode

    def _leaf(self, key: str, values: Any) -> np.ndarray:
        """Decode one observation leaf; image Boxes may hold raw pixels or JPEG blobs, whatever the metadata says."""
        space = self.obs_space[key]
        if _is_image(space) and not (isinstance(values, np.ndarray) and values.ndim == 4):
            return _decode_jpeg(values)
        return np.asarray(values, dtype=space.get("dtype"))

    def _read_hdf5(self, i: int) -> tuple[dict[str, np.ndarray], str]:
        label = f"main_data.hdf5:episode_{i}"
        with h5py.File(self.data / "main_data.hdf5", "r") as f:
            group = f[f"episode_{i}"]
            raw: dict[str, np.ndarray] = {}
            for key in self.obs_space:
                h5key = "observations" + key.removeprefix("observation").replace(".", "/")
                if h5key not in group:
                    raise DataError(self.path, f"{label}/{h5key}", "missing; expected it from the observation space")
                raw[key] = self._leaf(key, group[h5key][()])
            for h5key, native in {"actions": "action", **_STEP_KEYS}.items():
                if h5key not in group:
                    raise DataError(self.path, f"{label}/{h5key}", "missing; expected per-step episode data")
                raw[native] = np.asarray(group[h5key][()])
        return raw, label

    def _read_arrow(self, i: int) -> tuple[dict[str, np.ndarray], str]:
        import pyarrow as pa
        import pyarrow.dataset as pds

        label = f"data/{i}"
        try:
            ignore = ["_", ".", "metadata.json"]
            table = pds.dataset(str(self.data / str(i)), format="arrow", ignore_prefixes=ignore).to_table()
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(self.path, label, f"not readable arrow data (truncated or corrupt?): {exc}") from exc

        def column(field: Any, key: str) -> np.ndarray:
            arr = field.combine_chunks() if hasattr(field, "combine_chunks") else field
            if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
                return self._leaf(key, arr.to_pylist())
            if pa.types.is_fixed_size_list(arr.type):
                flat = np.asarray(arr.flatten().to_numpy(zero_copy_only=False))
                return flat.reshape(len(arr), *self.obs_space.get(key, {}).get("shape", [-1]))
            return np.asarray(arr.to_numpy(zero_copy_only=False))

        raw: dict[str, np.ndarray] = {}
        for key in self.obs_space:
            field: Any = table["observations"]
            for part in key.split(".")[1:]:
                field = field.combine_chunks().field(part)
            raw[key] = column(field, key)
        # Minari pads actions/rewards/flags to the observations' length; the padding row is not a step.
        for name, native in {"actions": "action", **_STEP_KEYS}.items():
            if name not in table.column_names:
                raise DataError(self.path, f"{label}/{name}", "missing; expected per-step episode data")
            raw[native] = column(table[name], native)[:-1]
        action_space = self.meta["action_space"]
        action_space = json.loads(action_space) if isinstance(action_space, str) else action_space
        if action_space.get("shape"):
            raw["action"] = raw["action"].reshape(len(raw["action"]), *action_space["shape"])
        return raw, label


def open_minari(path: Path) -> MinariSource:
    return MinariSource(path)


FORMAT = Format(
    name="minari",
    help="Minari dataset directory (hdf5 or arrow storage); read only",
    detect=detect,
    open=open_minari,
)
