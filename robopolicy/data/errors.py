"""One exception type for bad dataset input, so the CLI can print it and exit 2 instead of a traceback."""
from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad or unsupported dataset input. The message names the file, the key and what was expected."""

    def __init__(self, path: str | Path, key: str | None, problem: str) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        where = f"{self.path}" + (f" [{key}]" if key else "")
        super().__init__(f"{where}: {problem}")
