"""Policy heads. Add a head by writing one module with a `Head` subclass and listing it in `heads/registry.py`
(a pretrained head) or in `HEADS` below (a head that wraps a pretrained one)."""

from __future__ import annotations

from typing import Any

from robopolicy.heads.base import Chain, Head
from robopolicy.heads.finetuned import FinetunedHead
from robopolicy.heads.noise_injected import NoiseInjectedHead
from robopolicy.heads.registry import PRETRAINED_HEADS, build_from
from robopolicy.specs import BackboneConfig

HEADS: dict[str, type[Head]] = {**PRETRAINED_HEADS, FinetunedHead.name: FinetunedHead,
                                NoiseInjectedHead.name: NoiseInjectedHead}


def build_head(name: str, params: dict[str, Any], action_dim: int, horizon: int, cond_dim: int,
               backbone: BackboneConfig) -> Head:
    """Any registered head by name; an unknown name is a ConfigError listing the known ones."""
    return build_from(HEADS, name, params, action_dim, horizon, cond_dim, backbone)


__all__ = ["Chain", "Head", "HEADS", "build_head"]
