"""Error types the command line reports as exit code 2, kept free of heavy imports so the CLI starts fast."""

from __future__ import annotations

from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or of an unknown format; the message names the file and field."""


class DataError(ValueError):
    """Bad or unsupported dataset input. The message names the file, the key and what was expected."""

    def __init__(self, path: str | Path, key: str | None, problem: str) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        where = f"{self.path}" + (f" [{key}]" if key else "")
        super().__init__(f"{where}: {problem}")
