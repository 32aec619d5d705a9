"""Observations rebuilt from recorded simulator states, as robomimic's `dataset_states_to_obs` does.

`RegeneratedSource` wraps any opened dataset that records `states`: each episode's states are replayed by an
observer (a simulator that can set a state and observe it; `robopolicy.sim.state_obs` provides one per task),
the stored observations are replaced by fresh ones, and everything else (actions, states, rewards, extras)
is kept. Where the source also stored a low-dim observation under the same key, the replayed values are
compared with it: the largest absolute difference per key, where it happened, and how many steps exceed
the tolerance land in the written dataset's provenance (`source.regenerated`). The convert pipeline does
the rest (validation, temporary output, verification, atomic rename).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from robopolicy.data.convert import convert
from robopolicy.data.convert.base import Episode, Source, SourceInfo, Summary
from robopolicy.errors import DataError

STATES_KEY = "states"
DEFAULT_ATOL = 1e-5


class Observer(Protocol):
    """What replays states: `features` gives {obs key: (shape, dtype)} of what `observe` returns."""

    @property
    def features(self) -> dict[str, tuple[tuple[int, ...], str]]: ...

    def start_episode(self) -> None: ...

    def observe(self, state: np.ndarray) -> dict[str, np.ndarray]: ...


@dataclass
class KeyMismatch:
    """How far replayed values of one low-dim key are from the stored ones, over every compared step."""

    max_abs: float = 0.0
    where: str = ""
    steps: int = 0
    over_tolerance: int = 0

    def add(self, label: str, replayed: np.ndarray, stored: np.ndarray, atol: float) -> None:
        err = np.abs(replayed.astype(np.float64) - stored.astype(np.float64)).reshape(len(stored), -1).max(axis=1)
        self.steps += len(err)
        self.over_tolerance += int((err > atol).sum())
        step = int(err.argmax())
        if err[step] > self.max_abs or not self.where:
            self.max_abs, self.where = float(err[step]), f"{label} step {step}"


@dataclass
class Report:
    atol: float
    recorded_with: str | None = None  # the robosuite version a robosuite/robomimic file names
    keys: dict[str, KeyMismatch] = field(default_factory=dict)
    not_compared: list[str] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return all(m.over_tolerance == 0 for m in self.keys.values())

    def as_dict(self) -> dict[str, Any]:
        return {"atol": self.atol, "agrees": self.agrees, "recorded_with": self.recorded_with,
                "not_compared": self.not_compared,
                "keys": {k: vars(m) for k, m in self.keys.items()}}

    def render(self) -> str:
        recorded = f"recorded with robosuite {self.recorded_with}; " if self.recorded_with else ""
        if not self.keys:
            return f"{recorded}no stored low-dim observation to compare with (new: {', '.join(self.not_compared)})"
        lines = [f"{recorded}replayed vs stored low-dim observations (tolerance {self.atol:g}):",
                 f"  {'key':<24}{'max |diff|':>12}  {'steps over':>12}  where"]
        for key, m in self.keys.items():
            lines.append(f"  {key:<24}{m.max_abs:>12.3g}  {m.over_tolerance:>5}/{m.steps:<6}  {m.where}")
        lines.append("  all within tolerance" if self.agrees else "  MISMATCH: replayed states do not reproduce them")
        return "\n".join(lines)


class RegeneratedSource(Source):
    """`inner` with its observations rebuilt by `observer` from its recorded states."""

    format = "regenerated"

    def __init__(self, inner: Source, observer: Observer, atol: float = DEFAULT_ATOL, strict: bool = False,
                 provenance: dict[str, Any] | None = None) -> None:
        super().__init__(inner.path)
        self.inner, self.observer, self.strict = inner, observer, strict
        old = inner.info
        recorded = old.source.get("repository_version")
        self.report = Report(atol, str(recorded) if recorded else None)
        self.dropped = [k for k in old.obs_keys if k != STATES_KEY]
        self._provenance = {**(provenance or {}), "atol": atol}
        source = {**old.source, "regenerated": self._provenance}
        names = {k: v for k, v in old.names.items() if k not in self.dropped}
        self._info = SourceInfo(obs_keys=list(observer.features), action_key=old.action_key, fps=old.fps,
                                names=names, convention=old.convention, source=source)

    @property
    def info(self) -> SourceInfo:
        return self._info

    def summary(self) -> Summary:
        inner = self.inner.summary()
        features = {k: v for k, v in inner.features.items() if k not in self.dropped}
        if STATES_KEY not in features:
            raise DataError(self.path, STATES_KEY, f"missing; expected recorded simulator states to replay "
                                                   f"(the dataset has {sorted(inner.features)})")
        features.update(self.observer.features)
        return Summary(inner.path, inner.format, inner.n_episodes, inner.n_frames, inner.fps, features)

    def episodes(self) -> Iterator[tuple[str, Episode]]:
        for label, episode in self.inner.episodes():
            if STATES_KEY not in episode:
                raise DataError(self.path, f"{label}/{STATES_KEY}", "missing; expected recorded simulator states")
            self.observer.start_episode()
            frames = [self.observer.observe(s) for s in episode[STATES_KEY]]
            fresh = {k: np.stack([f[k] for f in frames]) for k in self.observer.features}
            self._compare(label, episode, fresh)
            out = {k: v for k, v in episode.items() if k not in self.dropped}
            out.update(fresh)
            yield label, out
        self._provenance["comparison"] = self.report.as_dict()
        if self.strict and not self.report.agrees:
            key, m = next((k, m) for k, m in self.report.keys.items() if m.over_tolerance)
            raise DataError(self.path, key, f"replayed states give values up to {m.max_abs:.3g} from the stored ones "
                                            f"at {m.where}; expected within {self.report.atol:g}")

    def _compare(self, label: str, stored: Episode, fresh: Episode) -> None:
        for key, values in fresh.items():
            old = stored.get(key)
            low_dim = not (values.dtype == np.uint8 and values.ndim == 4)
            if old is None or not low_dim:
                if key not in self.report.not_compared and key not in self.report.keys:
                    self.report.not_compared.append(key)
                continue
            if old.shape != values.shape:
                raise DataError(self.path, f"{label}/{key}", f"stored with shape {old.shape}; the replay gives "
                                                             f"{values.shape} (another task or version?)")
            self.report.keys.setdefault(key, KeyMismatch()).add(label, values, old, self.report.atol)


def regenerate(
    src: str | Path,
    dst: str | Path,
    observer: Observer,
    atol: float = DEFAULT_ATOL,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    provenance: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
) -> tuple[Summary, Summary, Report]:
    """Write `dst` (format from its suffix) from `src` with observations replayed from its states."""
    holder: list[RegeneratedSource] = []

    def wrap(source: Source) -> Source:
        holder.append(RegeneratedSource(source, observer, atol, strict, provenance))
        return holder[0]

    src_summary, out_summary = convert(src, dst, overwrite=overwrite, progress=progress, options=options, wrap=wrap)
    return src_summary, out_summary, holder[0].report
