"""What every format module provides: a Source (read side), an optional writer, and a Summary.

Readers stream episodes as dicts of per-step arrays under native key names (obs keys, "action",
extras such as "reward"); writers consume any Source, so every readable format converts to every
writable one through the same in-memory episode.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robopolicy.data.validate import features_of

__all__ = ["Episode", "Format", "Source", "SourceInfo", "Summary", "Writer", "features_of"]

Episode = dict[str, np.ndarray]


@dataclass
class Summary:
    """Counts, shapes and dtypes of a dataset: printed by `data inspect` and compared after conversion."""

    path: str
    format: str
    n_episodes: int
    n_frames: int | None  # None: not recorded in the metadata (RLDS), counted while converting
    fps: float | None
    features: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)

    def render(self) -> str:
        fps = "unknown" if self.fps is None else f"{self.fps:g}"
        lines = [
            f"{self.path}",
            f"  format    {self.format}",
            f"  episodes  {self.n_episodes}",
            f"  frames    {'unknown (not in the metadata)' if self.n_frames is None else self.n_frames}",
            f"  fps       {fps}",
            "  features:",
        ]
        width = max((len(k) for k in self.features), default=0)
        for key, (shape, dtype) in sorted(self.features.items()):
            lines.append(f"    {key:<{width}}  {str(tuple(shape)):<16} {dtype}")
        return "\n".join(lines)


@dataclass
class SourceInfo:
    """What a reader knows beyond the arrays: which keys are observations, rate, conventions, provenance."""

    obs_keys: list[str]
    action_key: str = "action"
    fps: float | None = None
    names: dict[str, list[str]] = field(default_factory=dict)
    convention: dict[str, str] = field(default_factory=lambda: {"mode": "unknown", "rotation": "unknown"})
    source: dict[str, Any] = field(default_factory=dict)


class Source(ABC):
    """An opened dataset. `summary` reads metadata only; `episodes` decodes on demand."""

    format: str = ""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    @abstractmethod
    def info(self) -> SourceInfo: ...

    @abstractmethod
    def summary(self) -> Summary: ...

    @abstractmethod
    def episodes(self) -> Iterator[tuple[str, Episode]]:
        """Yield (label, episode); the label names the episode in the source, for error messages."""

    def close(self) -> None:  # noqa: B027 - a deliberate no-op default, not a forgotten abstract method
        """Release open files; readers that hold none keep this default."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Writer = Callable[[Source, Iterator[Episode], Path, dict[str, Any]], dict[str, str]]
"""write(source, episodes, tmp_path, options) -> {native key: key in the written dataset}."""


@dataclass
class Format:
    """A registered dataset format: detection, reading and (optionally) writing."""

    name: str
    help: str
    detect: Callable[[Path], bool]
    open: Callable[..., Source]
    write: Writer | None = None
    suffixes: tuple[str, ...] = ()
