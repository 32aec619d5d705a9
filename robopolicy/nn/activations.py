"""Mish with a backward pass that can itself be differentiated at any input (energy heads need it).

Energy heads train and fine-tune through grad_x E, so autograd differentiates the backbone's backward pass.
PyTorch's own Mish backward differentiates through exp(x), which overflows to inf for pre-activations above
~88 and turns the second-order gradient into NaN (ReinFlow on the diffusion-trained energy head had NaN
gradients in the time MLP). Here the forward pass is torch's fused Mish, bit for bit, and the backward pass
is written with softplus (linear above its threshold), tanh and sigmoid, which stay finite everywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _Mish(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return F.mish(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        t = torch.tanh(F.softplus(x))
        return grad * (t + x * torch.sigmoid(x) * (1 - t * t))


class TwiceDifferentiableMish(nn.Mish):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Mish.apply(x)


def make_twice_differentiable(module: nn.Module) -> nn.Module:
    """Replace every `nn.Mish` inside `module` (in place) by `TwiceDifferentiableMish`; returns `module`.
    Parameters and the state dict are untouched (Mish has none), so checkpoints load either way."""
    for name, child in module.named_children():
        if type(child) is nn.Mish:
            setattr(module, name, TwiceDifferentiableMish())
        else:
            make_twice_differentiable(child)
    return module
