"""What both sides of scripts/compare_peers.py share: the command loop, the timing loops and the memory read-outs
(scripts/bench_inference.py times its closed loop with the same `time_control_steps`).

Standard library only, so that it runs in either virtual environment. Each side is a long-lived process that
answers one JSON command per stdin line with one JSON line on stdout; the driver alternates commands between
the sides, so every figure of both is taken under the same machine load. Library output goes to stderr.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def rss_mb() -> float:
    """Resident memory of this process now, in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory(cuda_peak_mb: float | None = None) -> dict[str, float]:
    """Resident memory now and at its peak, plus the CUDA peak where the side runs on a GPU."""
    out = {"rss_mb": rss_mb(), "peak_rss_mb": peak_rss_mb()}
    if cuda_peak_mb is not None:
        out["cuda_peak_mb"] = cuda_peak_mb
    return out


def time_calls(fn: Callable[[], T], repeats: int, sync: Callable[[], object] | None = None) -> tuple[list[float], T]:
    """Seconds of each of ``repeats`` calls of ``fn`` (``sync`` inside the timed span: a GPU's queue drained),
    and the last call's result."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        if sync is not None:
            sync()
        seconds.append(time.perf_counter() - start)
    return seconds, result


def time_control_steps(step: Callable[[], object], n_action_steps: int, cycles: int) -> list[list[float]]:
    """Seconds of each control step of a chunk (index 0: the replanning step), over ``cycles`` chunks after a
    warm-up chunk that starts the episode (reset the policy first)."""
    per_step: list[list[float]] = [[] for _ in range(n_action_steps)]
    for cycle in range(cycles + 1):
        for bucket in per_step:
            start = time.perf_counter()
            step()
            if cycle:
                bucket.append(time.perf_counter() - start)
    return per_step


def serve(handlers: dict[str, Callable[..., dict[str, Any]]]) -> None:
    """Run commands {"cmd": name, **kwargs} until "quit" or end of input; a failure is replied, not raised."""
    out, sys.stdout = sys.stdout, sys.stderr  # keep stray prints off the reply channel
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg.pop("cmd")
        if cmd == "quit":
            break
        try:
            reply = {"ok": True, **handlers[cmd](**msg)}
        except Exception:  # the driver prints it and stops
            reply = {"ok": False, "error": traceback.format_exc()}
        out.write(json.dumps(reply) + "\n")
        out.flush()
