"""What the heads that wrap a pretrained head share (`finetuned`, `noise_injected`).

Such a head has no network of its own: its params name the pretrained head (`base`, a `HeadConfig`) and the
chain's step count (`steps`), and it is built around that head, so a checkpoint of it is an ordinary policy
checkpoint. Only how each wrapper trains and samples differs; building, wrapping a config and delegating to
the base head live here once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robopolicy.heads.base import Head
from robopolicy.heads.registry import build_pretrained_head
from robopolicy.specs import BackboneConfig, HeadConfig, from_dict


class WrapperHead(Head):
    """A head around the pretrained head `base` (built from `params.base`); `Params` has `base` and `steps`."""

    def __init__(self, params: dict[str, Any], action_dim: int, horizon: int, cond_dim: int,
                 backbone: BackboneConfig) -> None:
        nn.Module.__init__(self)  # no network of its own (Head.__init__ would build one): the wrapped head holds it
        self.params = from_dict(self.Params, params, "head.params")
        self.action_dim, self.horizon, self.cond_dim = action_dim, horizon, cond_dim
        base = self.params.base
        self.base = build_pretrained_head(base.name, base.params, action_dim, horizon, cond_dim, backbone)
        self.samples_with_autograd = self.base.samples_with_autograd

    @classmethod
    def wrap(cls, head_config: HeadConfig, **settings: Any) -> HeadConfig:
        """The head config of `head_config`'s head wrapped by this head with `settings` (fields of `Params`)."""
        return HeadConfig(cls.name, {"base": {"name": head_config.name, "params": head_config.params}, **settings})

    @property  # read-only here: the base head owns the network this names
    def net(self) -> nn.Module:  # type: ignore[override]
        """The pretrained network (ahead-of-time compilation of UNet heads compiles this one call)."""
        return self.base.net

    def default_chain_steps(self) -> int:
        return int(self.params.steps)

    def initial_latent(self, batch: int, cond: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self.base.initial_latent(batch, cond, generator)
