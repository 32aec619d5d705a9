"""The heads a policy can be trained with, listed by hand: adding a head is one module and one line here.

Pretrained heads (trained by behaviour cloning) sit below the wrapper heads that fine-tune one of them
(``finetuned``, ``noise_injected``): the wrappers build their base head from this table, and
``robopolicy.heads`` adds them on top for ``build_head``, so the imports point one way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from robopolicy.heads.base import Head
from robopolicy.heads.consistency import ConsistencyHead
from robopolicy.heads.diffusion import DiffusionHead
from robopolicy.heads.energy import EnergyHead
from robopolicy.heads.energy_diffusion import EnergyDiffusionHead
from robopolicy.heads.flow import FlowHead
from robopolicy.heads.regression import RegressionHead
from robopolicy.specs import BackboneConfig, ConfigError

PRETRAINED_HEADS: dict[str, type[Head]] = {
    head.name: head
    for head in (DiffusionHead, FlowHead, ConsistencyHead, EnergyHead, EnergyDiffusionHead, RegressionHead)
}


def build_from(heads: Mapping[str, type[Head]], name: str, params: dict[str, Any], action_dim: int, horizon: int,
               cond_dim: int, backbone: BackboneConfig) -> Head:
    """Build head `name` from the table `heads`; an unknown name is a ConfigError listing the known ones."""
    if name not in heads:
        raise ConfigError(f"head.name: expected one of {sorted(heads)}, got {name!r}")
    return heads[name](params, action_dim, horizon, cond_dim, backbone)


def build_pretrained_head(name: str, params: dict[str, Any], action_dim: int, horizon: int, cond_dim: int,
                          backbone: BackboneConfig) -> Head:
    """A pretrained head (the base a wrapper head fine-tunes)."""
    return build_from(PRETRAINED_HEADS, name, params, action_dim, horizon, cond_dim, backbone)
