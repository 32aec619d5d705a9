"""robomimic hdf5 (processed, with `obs/`) and raw robosuite demo hdf5 (`states`, `actions`, `demo_1..N`).

Layout: data/demo_<k>/{actions, states, rewards, dones, actions_abs, action_dict/*, obs/*}; data attrs
`env_args` (robomimic) or `env`/`env_info` (robosuite); optional mask/<filter_key> lists of demo names
as byte strings. Demos are read in order of their integer suffix, as robomimic does. Other datasets
directly under a demo that have one row per action are kept under their own names; `next_obs` (obs
shifted by one) and logs sampled at other rates are left out.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from robopolicy.data.convert.base import Episode, Format, Source, SourceInfo, Summary
from robopolicy.errors import DataError

# robomimic name -> native name, for per-step datasets directly under data/demo_k.
_TOP_LEVEL = {
    "actions": "action", "states": "states", "rewards": "reward", "dones": "done", "actions_abs": "action_abs",
}
_DICT_PREFIX = "action_dict."


def detect(path: Path) -> bool:
    if not path.is_file() or not h5py.is_hdf5(path):
        return False
    try:
        with h5py.File(path, "r") as f:
            data = f.get("data")
            return isinstance(data, h5py.Group) and any(k.startswith("demo_") for k in data)
    except OSError:
        return True  # an HDF5 signature but unreadable: let open() report the damage


def _demo_index(path: Path, name: str) -> int:
    try:
        return int(name.removeprefix("demo_"))
    except ValueError as exc:
        raise DataError(path, f"data/{name}", "expected demo groups named demo_<integer>") from exc


def _json_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    try:
        return json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        return value


def _find(tree: Any, key: str) -> Any:
    """First value stored under `key` anywhere in nested JSON (controller configs nest differently by version)."""
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        tree = list(tree.values())
    if isinstance(tree, list):
        for item in tree:
            found = _find(item, key)
            if found is not None:
                return found
    return None


class RobomimicSource(Source):
    format = "robomimic"

    def __init__(self, path: Path, filter_key: str | None = None) -> None:
        super().__init__(path)
        try:
            self.file = h5py.File(path, "r")
        except OSError as exc:
            raise DataError(path, None, f"not a readable HDF5 file (truncated or corrupt?): {exc}") from exc
        data = self.file.get("data")
        if not isinstance(data, h5py.Group):
            raise DataError(path, "data", "missing; expected robomimic/robosuite groups data/demo_<k>")
        self.data = data
        names = [k for k in data if k.startswith("demo_")]
        if filter_key is not None:
            mask = self.file.get(f"mask/{filter_key}")
            if mask is None:
                have = list(self.file["mask"]) if "mask" in self.file else []
                raise DataError(path, f"mask/{filter_key}", f"missing; available filter keys: {have}")
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in mask[()]]
            missing = [n for n in names if n not in data]
            if missing:
                raise DataError(path, f"mask/{filter_key}", f"lists demos not in data/: {missing[:5]}")
        self.demos = sorted(names, key=lambda n: _demo_index(path, n))
        if not self.demos:
            raise DataError(path, "data", "no demo_<k> groups; expected at least one demonstration")
        self.processed = "obs" in data[self.demos[0]]
        self._info = self._make_info(filter_key)

    def _make_info(self, filter_key: str | None) -> SourceInfo:
        attrs = {k: _json_attr(v) for k, v in self.data.attrs.items()}
        env_args = attrs.get("env_args") or {}
        env_info = attrs.get("env_info") or {}
        kwargs = env_args.get("env_kwargs", {}) if isinstance(env_args, dict) else {}
        fps = _find(kwargs, "control_freq") or _find(env_info, "control_freq")
        info_controller = env_info.get("controller_configs") if isinstance(env_info, dict) else None
        controller = kwargs.get("controller_configs") or info_controller
        delta = _find(controller, "control_delta")
        ctype = str(_find(controller, "type") or "")
        convention = {
            "mode": "unknown" if delta is None else ("delta" if delta else "absolute"),
            "rotation": "axis_angle" if "OSC_POSE" in ctype or "BASIC" in ctype else "unknown",
            "controller": ctype or "unknown",
        }
        kept = {k: v for k, v in attrs.items()
                if k in ("env_args", "env", "env_info", "repository_version", "date", "time")}
        source = {"format": "robomimic" if self.processed else "robosuite", "path": str(self.path),
                  "filter_key": filter_key, **kept}
        first = self.data[self.demos[0]]
        obs_keys = sorted(first["obs"]) if self.processed else ["states"]
        return SourceInfo(obs_keys=obs_keys, fps=float(fps) if fps else None, convention=convention, source=source)

    @property
    def info(self) -> SourceInfo:
        return self._info

    def _datasets(self, name: str) -> dict[str, h5py.Dataset]:
        """Native key -> hdf5 dataset for one demo, with every required key present."""
        demo = self.data[name]
        if "actions" not in demo:
            raise DataError(self.path, f"data/{name}/actions", "missing; expected the demo's actions")
        out = {native: demo[k] for k, native in _TOP_LEVEL.items() if k in demo}
        n = demo["actions"].shape[0]
        out.update({  # other per-step datasets (e.g. teleoperation flags) ride along under their own names
            k: v for k, v in demo.items()
            if isinstance(v, h5py.Dataset) and k not in _TOP_LEVEL and v.shape[:1] == (n,)
        })
        if self.processed:
            if "obs" not in demo:
                raise DataError(self.path, f"data/{name}/obs",
                                "missing; expected the observations group of a robomimic dataset")
            out.update({k: demo["obs"][k] for k in self._info.obs_keys if k in demo["obs"]})
            for k in self._info.obs_keys:
                if k not in demo["obs"]:
                    raise DataError(self.path, f"data/{name}/obs/{k}",
                                    "missing; expected the same obs keys in every demo")
        if "action_dict" in demo:
            out.update({f"{_DICT_PREFIX}{k}": demo["action_dict"][k] for k in demo["action_dict"]})
        elif "states" not in demo and not self.processed:
            raise DataError(self.path, f"data/{name}/states",
                            "missing; expected the simulator states of a robosuite demo")
        return out

    def summary(self) -> Summary:
        n_frames = 0
        for name in self.demos:
            ds = self.data[name].get("actions")
            n_frames += 0 if ds is None else ds.shape[0]
        first = self._datasets(self.demos[0])
        feats = {k: (tuple(v.shape[1:]), str(v.dtype)) for k, v in first.items()}
        fmt = "robomimic hdf5" if self.processed else "robosuite demo hdf5"
        return Summary(str(self.path), fmt, len(self.demos), n_frames, self._info.fps, feats)

    def episodes(self) -> Iterator[tuple[str, Episode]]:
        for name in self.demos:
            datasets = self._datasets(name)
            try:
                episode = {k: np.asarray(v[()]) for k, v in datasets.items()}
            except OSError as exc:
                raise DataError(self.path, f"data/{name}", f"could not be read (truncated or corrupt?): {exc}") from exc
            yield f"data/{name}", episode

    def close(self) -> None:
        self.file.close()


def open_robomimic(path: Path, filter_key: str | None = None) -> RobomimicSource:
    return RobomimicSource(path, filter_key)


def write_robomimic(source: Source, episodes: Iterator[Episode], tmp: Path, options: dict[str, Any]) -> dict[str, str]:
    """Write robomimic's processed layout (demo_0..N-1, obs/ per key), keeping env_args when the source had them."""
    info = source.info
    reverse = {native: k for k, native in _TOP_LEVEL.items()}
    total = 0
    with h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        n = 0
        for n, episode in enumerate(episodes):
            demo = data.create_group(f"demo_{n}")
            for key, arr in episode.items():
                if key in info.obs_keys:
                    name = f"obs/{key}"
                elif key.startswith(_DICT_PREFIX):
                    name = f"action_dict/{key.removeprefix(_DICT_PREFIX)}"
                else:
                    name = reverse.get(key, key)
                demo.create_dataset(name, data=arr, compression="gzip" if arr.ndim >= 3 else None)
            demo.attrs["num_samples"] = len(episode[info.action_key])
            total += len(episode[info.action_key])
        if not len(data):
            raise DataError(source.path, None, "no episodes to write; expected at least one")
        data.attrs["total"] = total
        env_args = info.source.get("env_args")
        no_env = {"env_name": None, "type": None, "env_kwargs": {}}
        data.attrs["env_args"] = json.dumps(env_args if env_args else no_env)
        data.attrs["robopolicy_source"] = json.dumps(info.source, default=str)
    return {}  # reading the file back yields the same native keys


FORMAT = Format(
    name="robomimic",
    help="robomimic hdf5 (data/demo_k/obs) or raw robosuite demo.hdf5 (states, actions); --filter-key uses mask/<key>",
    detect=detect,
    open=open_robomimic,
    write=write_robomimic,
    suffixes=(".hdf5", ".h5"),
)
