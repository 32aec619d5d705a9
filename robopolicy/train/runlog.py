"""Structured training logs: `log.csv` (always) and tensorboard under `tb/` (optional). Rank 0 only.

On resume, rows logged after the checkpoint's step are dropped (from the CSV and, via `purge_step`,
from tensorboard), so a run that crashed after its last checkpoint does not log those steps twice.
"""

from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = ["step", "loss", "lr", "grad_norm", "val_loss", "samples_per_s", "elapsed_s"]


def _cell(value: float | int | None) -> str:
    return "" if value is None else repr(value)  # repr round-trips floats exactly


class RunLog:
    """`columns`: the CSV header (the BC trainer's by default; fine-tuning logs its own)."""

    def __init__(self, out_dir: Path, start_step: int, tensorboard: bool, columns: list[str] = COLUMNS) -> None:
        self.path = out_dir / "log.csv"
        self.columns = columns
        self._truncate_after(start_step)
        new = not self.path.exists()
        self._file = self.path.open("a", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=self.columns)
        if new:
            self._csv.writeheader()
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(out_dir / "tb"), purge_step=start_step + 1)

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        with self.path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict[str, float | int | None]) -> None:
        self._csv.writerow({k: _cell(row.get(k)) for k in self.columns})
        self._file.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and value is not None:
                    self._tb.add_scalar(f"train/{key}", value, row["step"])

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_log(path: str | Path) -> list[dict[str, float | None]]:
    """The rows of a `log.csv` as numbers (None for empty cells), for tests, plots and the demo."""
    with Path(path).open(newline="") as f:
        return [{k: (float(v) if v else None) for k, v in row.items()} for row in csv.DictReader(f)]
