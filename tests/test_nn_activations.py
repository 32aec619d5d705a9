"""The twice-differentiable Mish the energy heads use: torch's forward bit for bit, the same first derivative,
finite second derivatives where torch's own (through exp) overflows, and the swap leaves checkpoints alone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robopolicy.heads import build_head
from robopolicy.nn.activations import TwiceDifferentiableMish, make_twice_differentiable
from robopolicy.nn.backbones import build_backbone
from robopolicy.specs import BackboneConfig


def test_forward_and_first_derivative_are_torchs() -> None:
    x = torch.linspace(-30, 120, 1001, dtype=torch.float64, requires_grad=True)
    ours = TwiceDifferentiableMish()(x)
    assert torch.equal(ours, F.mish(x))
    (g_ours,) = torch.autograd.grad(ours.sum(), x)
    (g_torch,) = torch.autograd.grad(F.mish(x).sum(), x)
    torch.testing.assert_close(g_ours, g_torch)
    small = torch.randn(20, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(TwiceDifferentiableMish(), (small,))


def test_second_derivative_is_finite_at_large_inputs() -> None:
    x = torch.tensor([-200.0, -5.0, 0.0, 5.0, 90.0, 200.0, 1e4], requires_grad=True)
    (g,) = torch.autograd.grad(TwiceDifferentiableMish()(x).sum(), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), x)
    assert torch.isfinite(gg).all(), gg
    torch.testing.assert_close(gg[-3:], torch.zeros(3))  # Mish is linear far out on the right


def test_the_swap_reaches_every_mish_and_keeps_the_state_dict() -> None:
    config = BackboneConfig(kind="residual_mlp", hidden_dims=[32, 32], time_embed_dim=16)
    net = build_backbone(config, 2, 4, 3)
    keys = list(net.state_dict())
    assert any(type(m) is nn.Mish for m in net.modules())
    make_twice_differentiable(net)
    assert not any(type(m) is nn.Mish for m in net.modules())
    assert list(net.state_dict()) == keys
    for name in ("energy", "energy_diffusion"):
        head = build_head(name, {}, 2, 4, 3, config)
        assert not any(type(m) is nn.Mish for m in head.modules())
