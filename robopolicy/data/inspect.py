"""One summary (episodes, frames, fps, per-key shape and dtype) for any supported format."""
from __future__ import annotations

from pathlib import Path

from robopolicy.data.convert import open_source
from robopolicy.data.convert.base import Summary


def inspect_dataset(path: str | Path, fmt: str | None = None) -> Summary:
    """Read only metadata (and at most one episode) to describe the dataset at `path`."""
    with open_source(path, fmt) as source:
        return source.summary()
