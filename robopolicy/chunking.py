"""Executing a chunking policy: the observation window it plans from and the queue of planned actions.

A policy plans a chunk of ``horizon`` actions from its last ``n_obs_steps`` observations and the loop executes
the chunk's first actions before planning again (diffusion_policy's receding horizon). Three loops do this, and
they share the two pieces defined here rather than each keeping its own deques:

- `Policy.select_action` (synchronous, one batched step at a time: evaluation scripts, peers benchmarks) keeps a
  `FrameHistory` of per-frame features and a `ChunkQueue` of the planned actions;
- the HAL `Executor` (real time, inference in its own thread) keeps a `FrameHistory` of robot observations and
  a `ChunkQueue` whose chunks arrive late and are spliced onto the one being executed;
- `sim.wrappers.MultiStepWrapper` is the environment side of the same contract, for the batch-oriented loops
  (evaluation protocol, RL collector, demonstration collection): it takes a whole chunk of ``n_action_steps``
  actions per `step`, executes them in the env and returns the stacked `FrameHistory`. It needs no action
  queue, because the chunk is handed over whole and nothing is spliced.

So there is one rule for the window (the first observation of an episode stands in for the history before it)
and one for the queue (a chunk planned at tick ``k`` holds the action for tick ``k + i`` at index ``i``).
The core layer holds them because the policy needs them and must not import ``sim`` or ``hal``.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Generic, Literal, Protocol, TypeVar

import numpy as np

SpliceMode = Literal["replace", "ensemble"]
Frame = TypeVar("Frame")
Action = TypeVar("Action")  # one action: an array or a tensor (one row per batch element in `Policy`)
Action_co = TypeVar("Action_co", covariant=True)


class Chunk(Protocol[Action_co]):
    """Actions indexed along the first (time) axis: an array or tensor (T, ...)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> Action_co: ...


class FrameHistory(Generic[Frame]):
    """The last ``n`` frames, oldest first; the first frame pushed after `clear` fills the whole window."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"the observation window needs n_obs_steps >= 1, got {n}")
        self._frames: deque[Frame] = deque(maxlen=n)

    def clear(self) -> None:
        self._frames.clear()

    def push(self, frame: Frame) -> None:
        self._frames.extend([frame] * (1 if self._frames else self._frames.maxlen))  # type: ignore[operator]

    @property
    def frames(self) -> list[Frame]:
        return list(self._frames)


def stack_frames(frames: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Observation dicts -> {key: (len(frames), ...)}, oldest first."""
    return {key: np.stack([frame[key] for frame in frames]) for key in frames[-1]}


class ChunkQueue(Generic[Action]):
    """Timestamped action chunks and how a new chunk is spliced onto the one being executed.

    A chunk put with ``start_tick=k`` holds the action for tick ``k + i`` at index ``i``. When inference took
    time the chunk's first actions are already in the past on arrival: they are dropped (and counted), never
    executed late.

    - ``replace`` (diffusion_policy's real-robot executor): the newest chunk overrides every future tick it covers.
    - ``ensemble`` (ACT's temporal ensembling): every chunk's prediction for a tick is kept, and the executed
      action is their average with weights ``exp(-decay * i)``, ``i = 0`` for the oldest prediction.

    Thread-safe: the HAL executor's inference thread puts chunks while its control loop pops one action a tick.
    """

    def __init__(self, mode: SpliceMode = "replace", decay: float = 0.01) -> None:
        if mode not in ("replace", "ensemble"):
            raise ValueError(f"splice mode must be 'replace' or 'ensemble', got {mode!r}")
        self.mode, self.decay = mode, float(decay)
        self._lock = threading.Lock()
        self._plans: dict[int, list[Action]] = {}
        self.stale_dropped = 0
        self.chunks = 0
        self._next_tick = 0

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles (`copy.deepcopy(policy)`) get a lock of their own: a lock cannot be copied."""
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def put(self, chunk: Chunk[Action], start_tick: int) -> int:
        """Splice ``chunk`` (T, ...), whose index 0 is for ``start_tick``; returns how many actions were stale."""
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

    def pop(self, tick: int) -> Action | None:
        """The action for ``tick`` (None: no chunk covers it); forgets every earlier tick."""
        with self._lock:
            if tick > self._next_tick:  # ticks were skipped (put never adds one before `_next_tick`)
                for old in [t for t in self._plans if t < tick]:
                    del self._plans[old]
            self._next_tick = tick + 1
            predictions = self._plans.pop(tick, None)
        if predictions is None:
            return None
        if len(predictions) == 1:
            return predictions[0]
        weights = [math.exp(-self.decay * i) for i in range(len(predictions))]
        values: list[Any] = list(predictions)  # arrays or tensors alike: scaled by floats and summed
        return sum(w / sum(weights) * value for w, value in zip(weights, values, strict=True))

    @property
    def next_tick(self) -> int:
        """The tick after the last one popped (0 before any pop): where a synchronous loop stands."""
        return self._next_tick

    def remaining(self, tick: int) -> int:
        """How many consecutive ticks from ``tick`` on are covered."""
        with self._lock:
            n = 0
            while tick + n in self._plans:
                n += 1
            return n
