"""Write-then-rename, so a failed or interrupted writer never leaves partial output at the destination.

Generic on purpose: dataset converters, checkpoint writers, the trainer and the PPO saver all use it.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class DestinationExistsError(FileExistsError):
    """The destination exists and the caller did not ask to overwrite it."""


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_output(dst: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `dst`; on success move it onto `dst`, on any error delete it.

    The temporary path lies in the destination's folder so the final rename stays on one filesystem, and
    ends with the destination's name so suffix-based writers (".zip", ".hdf5") treat it the same.
    The yielded path does not exist yet: the writer creates a file or a directory there.
    With `overwrite`, an existing `dst` is replaced only after the new output is complete.
    """
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise DestinationExistsError(f"{dst}: destination exists (pass --overwrite to replace it)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".tmp-{uuid.uuid4().hex[:8]}-{dst.name}"
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: the writer produced no output")
        if dst.exists():
            old = dst.parent / f".old-{uuid.uuid4().hex[:8]}-{dst.name}"
            os.replace(dst, old)
            os.replace(tmp, dst)
            _remove(old)
        else:
            os.replace(tmp, dst)
    finally:
        _remove(tmp)


def write_json(path: str | Path, obj: Any, indent: int = 2) -> None:
    """Write (or replace) a JSON report atomically: readers never see a half-written file."""
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent))
