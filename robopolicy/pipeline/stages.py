"""A resumable sequence of named stages with a progress display and ETA.

Why: the end-to-end demo runs for minutes and chains collection, training, fine-tuning, evaluation and deployment.
A re-run must pick up after the last finished stage instead of starting over, and a failure must say which stage
failed and why. Each stage returns a JSON-serializable record; finished records live in ``OUT/stages.json``
(written atomically after every stage), so later stages and the report read them back on a resumed run.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from robopolicy.atomic import write_json

StageRecord = dict[str, Any]
StageFn = Callable[[dict[str, StageRecord]], StageRecord]


@dataclass(frozen=True)
class Stage:
    """One step of a pipeline. ``estimate_s`` (a rough wall time on a 2-core CPU) drives the ETA before any
    stage has run; afterwards the estimates are rescaled by how fast this machine turned out to be."""

    name: str
    description: str
    run: StageFn
    estimate_s: float


class StageFailed(RuntimeError):
    """A stage raised; the message names the stage and its error, the traceback goes to ``OUT/failed_stage.txt``."""


def _fmt_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class StageRunner:
    """Runs stages in order, skipping those already finished in ``out/stages.json`` (unless ``fresh``)."""

    def __init__(self, out: Path, stages: list[Stage], fresh: bool = False, stream: TextIO | None = None) -> None:
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        self.out, self.stages, self.stream = out, stages, stream or sys.stderr
        self.state_path = out / "stages.json"
        self.done: dict[str, StageRecord] = {}
        if self.state_path.exists() and not fresh:
            self.done = json.loads(self.state_path.read_text()).get("finished", {})

    def _eta(self, index: int, speed: float) -> float:
        return sum(s.estimate_s for s in self.stages[index:] if s.name not in self.done) * speed

    def _say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def run(self) -> dict[str, StageRecord]:
        """Run every unfinished stage; returns the records of all stages, by name."""
        self.out.mkdir(parents=True, exist_ok=True)
        spent = estimated = 0.0
        total = len(self.stages)
        for i, stage in enumerate(self.stages, 1):
            if stage.name in self.done:
                self._say(f"[{i}/{total}] {stage.name}: done in an earlier run, skipped")
                continue
            speed = spent / estimated if estimated else 1.0
            self._say(f"[{i}/{total}] {stage.name}: {stage.description} (ETA for the rest: "
                      f"{_fmt_duration(self._eta(i - 1, speed))})")
            start = time.perf_counter()
            try:
                record = stage.run(self.done)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                (self.out / "failed_stage.txt").write_text(traceback.format_exc())
                raise StageFailed(f"stage '{stage.name}' failed: {type(exc).__name__}: {exc} "
                                  f"(traceback in {self.out / 'failed_stage.txt'}; re-run to resume here)") from exc
            elapsed = time.perf_counter() - start
            spent, estimated = spent + elapsed, estimated + stage.estimate_s
            self.done[stage.name] = {**record, "wall_s": round(elapsed, 2)}
            write_json(self.state_path, {"finished": self.done}, indent=1)
            self._say(f"[{i}/{total}] {stage.name}: finished in {_fmt_duration(elapsed)}")
        return self.done
