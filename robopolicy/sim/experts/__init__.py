"""Scripted experts by name, as task files refer to them (``[expert] name = ...``).

An expert has ``reset(seed)`` and ``act(obs) -> action`` for one environment, reading the latest
(unstacked) observation dict.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Expert(Protocol):
    def reset(self, seed: int | None = None) -> None: ...

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray: ...


def make_expert(name: str, **kwargs: Any) -> Expert:
    """Build a scripted expert; ``kwargs`` merge the task file's ``[expert] kwargs`` and quality knobs."""
    from robopolicy.sim.experts.push_puck import PushPuckExpert
    from robopolicy.sim.experts.robosuite_experts import CanExpert, LiftExpert, SquareExpert

    experts = {"push_puck": PushPuckExpert, "lift": LiftExpert, "can": CanExpert, "square": SquareExpert}
    if name not in experts:
        raise ValueError(f"unknown scripted expert {name!r} (known: {sorted(experts)})")
    return experts[name](**kwargs)
