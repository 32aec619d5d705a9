"""The zarr format: robopolicy's native stores and diffusion_policy's ReplayBuffer stores (v2, directory or .zip)."""
from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from robopolicy.data.convert.base import Episode, Format, Source, SourceInfo, Summary
from robopolicy.data.replay_buffer import ReplayBuffer, is_zip
from robopolicy.data.spec import build_attrs, describe
from robopolicy.errors import DataError

_GROUP_FILES = ("zarr.json", ".zgroup")


def detect(path: Path) -> bool:
    if path.is_dir():
        return any((path / f).exists() for f in _GROUP_FILES)
    if is_zip(path) and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return any(name in zf.namelist() for name in _GROUP_FILES)
    return False


class ZarrSource(Source):
    format = "zarr"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.rb = ReplayBuffer.open(path, mode="r")
        desc = describe(self.rb)
        attrs = self.rb.attrs
        action = desc["action"]
        names = {k: v["names"] for k, v in desc["obs"].items() if v.get("names")}
        if action.get("names"):
            names[action["key"]] = action["names"]
        source = dict(attrs.get("source") or {"format": "diffusion_policy zarr" if "obs" not in attrs else "zarr"})
        source.setdefault("path", str(path))
        self._info = SourceInfo(
            obs_keys=list(desc["obs"]),
            action_key=action["key"],
            fps=desc["fps"],
            names=names,
            convention=dict(action.get("convention") or {"mode": "unknown", "rotation": "unknown"}),
            source=source,
        )

    @property
    def info(self) -> SourceInfo:
        return self._info

    def summary(self) -> Summary:
        arrays = {k: self.rb.array(k) for k in self.rb.keys}
        feats = {k: (tuple(a.shape[1:]), str(a.dtype)) for k, a in arrays.items()}
        fmt = f"zarr v{self.rb.zarr_format}" + (" (zip)" if is_zip(self.path) else "")
        return Summary(str(self.path), fmt, self.rb.n_episodes, self.rb.n_steps, self._info.fps, feats)

    def episodes(self) -> Iterator[tuple[str, Episode]]:
        for i in range(self.rb.n_episodes):
            yield f"episode {i}", self.rb.get_episode(i)


def open_zarr(path: Path) -> ZarrSource:
    return ZarrSource(path)


def write_zarr(source: Source, episodes: Iterator[Episode], tmp: Path, options: dict[str, Any]) -> dict[str, str]:
    """Write a native zarr v3 store (zipped when the destination ends in .zip) with self-describing attrs."""
    info = source.info
    rb = None
    try:
        for episode in episodes:
            if rb is None:
                attrs = build_attrs(
                    episode, info.obs_keys, info.action_key, info.fps, info.convention, info.names,
                    source=info.source, command=options.get("command"),
                )
                rb = ReplayBuffer.create(tmp, attrs=json.loads(json.dumps(attrs, default=str)))
            rb.add_episode(episode, check=False)  # validated by the convert pipeline
        if rb is None:
            raise DataError(source.path, None, "no episodes to write; expected at least one")
        # Written again at the end: some readers learn provenance while streaming (RLDS per-episode metadata).
        rb.update_attrs({"source": json.loads(json.dumps(info.source, default=str))})
        rb.close()
    except BaseException:
        if rb is not None:
            rb.abort()
        raise
    return {}


FORMAT = Format(
    name="zarr",
    help="robopolicy native store or diffusion_policy ReplayBuffer (zarr v2/v3, directory or .zip)",
    detect=detect,
    open=open_zarr,
    write=write_zarr,
    suffixes=(".zarr", ".zarr.zip", ".zip"),
)
