"""Timestamped action chunks and how a new chunk is spliced onto the one being executed.

A chunk predicted from the observation of control tick ``k`` holds the action for tick ``k + i`` at index ``i``
(index 0: the observation's own tick, as everywhere in robopolicy). Inference takes time, so when the chunk
arrives its first actions are already in the past: they are dropped (and counted), never executed late.

- ``replace`` (diffusion_policy's real-robot executor): the newest chunk overrides every future tick it covers.
- ``ensemble`` (ACT's temporal ensembling): every chunk's prediction for a tick is kept, and the executed action
  is their average with weights ``exp(-decay * i)``, ``i = 0`` for the oldest prediction.
"""

from __future__ import annotations

import threading
from typing import Literal

import numpy as np

SpliceMode = Literal["replace", "ensemble"]


class ChunkQueue:
    """Thread-safe: the inference thread puts chunks, the control loop pops one action per tick."""

    def __init__(self, mode: SpliceMode = "replace", decay: float = 0.01) -> None:
        if mode not in ("replace", "ensemble"):
            raise ValueError(f"splice mode must be 'replace' or 'ensemble', got {mode!r}")
        self.mode, self.decay = mode, float(decay)
        self._lock = threading.Lock()
        self._plans: dict[int, list[np.ndarray]] = {}
        self.stale_dropped = 0
        self.chunks = 0
        self._next_tick = 0

    def put(self, chunk: np.ndarray, start_tick: int) -> int:
        """Splice ``chunk`` (T, D), whose index 0 is for ``start_tick``; returns how many actions were stale."""
        with self._lock:
            self.chunks += 1
            first = max(start_tick, self._next_tick)
            stale = first - start_tick
            self.stale_dropped += min(stale, len(chunk))
            for i in range(stale, len(chunk)):
                tick = start_tick + i
                if self.mode == "replace" or tick not in self._plans:
                    self._plans[tick] = [chunk[i]]
                else:
                    self._plans[tick].append(chunk[i])
            return min(stale, len(chunk))

    def pop(self, tick: int) -> np.ndarray | None:
        """The action for ``tick`` (None: no chunk covers it); forgets every earlier tick."""
        with self._lock:
            for old in [t for t in self._plans if t < tick]:
                del self._plans[old]
            self._next_tick = tick + 1
            predictions = self._plans.pop(tick, None)
        if predictions is None:
            return None
        if len(predictions) == 1:
            return predictions[0]
        weights = np.exp(-self.decay * np.arange(len(predictions)))
        return np.tensordot(weights / weights.sum(), np.stack(predictions), axes=1)

    def remaining(self, tick: int) -> int:
        """How many consecutive ticks from ``tick`` on are covered."""
        with self._lock:
            n = 0
            while tick + n in self._plans:
                n += 1
            return n
