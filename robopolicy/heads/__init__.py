"""Policy heads. Add a head by writing one module with a `Head` subclass and decorating it with `register_head`."""

from __future__ import annotations

from typing import Any

from robopolicy.heads.base import Chain, Head
from robopolicy.specs import BackboneConfig, ConfigError

HEADS: dict[str, type[Head]] = {}


def register_head(cls: type[Head]) -> type[Head]:
    HEADS[cls.name] = cls
    return cls


def build_head(name: str, params: dict[str, Any], action_dim: int, horizon: int, cond_dim: int,
               backbone: BackboneConfig) -> Head:
    if name not in HEADS:
        raise ConfigError(f"head.name: expected one of {sorted(HEADS)}, got {name!r}")
    return HEADS[name](params, action_dim, horizon, cond_dim, backbone)


# Registration happens on import; keep this list in sync with the head modules.
from robopolicy.heads import (  # noqa: E402,F401
    consistency,
    diffusion,
    energy,
    finetuned,
    flow,
    noise_injected,
    regression,  # noqa: E402,F401
)

__all__ = ["Chain", "Head", "HEADS", "build_head", "register_head"]
