"""What both sides of scripts/compare_peers.py share: the command loop and the memory read-outs.

Standard library only, so that it runs in either virtual environment. Each side is a long-lived process that
answers one JSON command per stdin line with one JSON line on stdout; the driver alternates commands between
the sides, so every figure of both is taken under the same machine load. Library output goes to stderr.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import traceback
from collections.abc import Callable
from typing import Any


def rss_mb() -> float:
    """Resident memory of this process now, in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
