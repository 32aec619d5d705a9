"""Diffusion-trained energy head: a scalar energy E_theta(x, t, cond) whose negative gradient is the score.

Why a second energy head. The contrastive energy head (`energy`: IBC's InfoNCE, EBT) has to find the minima of
E over a 16 x 2 action chunk by Langevin dynamics from a uniform start, and on push_puck it never learned an
energy that dynamics could descend (0-5 % success after BC; docs/finetuning.md "The energy head"). Trained by
denoising score matching instead (energy-parameterized diffusion, Salimans & Ho 2021; Du et al. 2023), the energy
is defined at every noise level, so sampling anneals from noise to the data as a diffusion policy does, and the
model is still an energy: one scalar per (chunk, noise level), a conservative score field, and an energy
value to rank or reject candidate chunks.

The energy is E(x, t) = |x - sqrt(abar_t) f(x, t)|^2 / (2 sigma_t^2) with f the backbone's chunk-shaped output
and sigma_t^2 = 1 - abar_t (DDPM's variance-preserving noising, diffusers' schedule). By Tweedie's formula the
clean-chunk estimate is (x - sigma_t^2 grad_x E) / sqrt(abar_t) = f + J_f^T (x - sqrt(abar_t) f), which is
what `denoiser_output` returns (`prediction_type = "sample"`): training regresses it on the demonstration, a
loss that stays well-conditioned at small sigma_t (the noise-prediction form would divide f's error by
sigma_t). Everything else is the diffusion head's: DDIM/DDPM sampling, and the reverse steps as Gaussian
transitions with exact log-probabilities, so the energy head is fine-tuned through its own denoising (annealed
Langevin) chain: `--algo dppo` (the DDPM chain) or `--algo reinflow` (the deployed DDIM sampler with learned
noise). Every prediction costs one backward pass to x (training: a double backward, hence the backbone's
twice-differentiable Mish, `robopolicy.nn.activations`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from robopolicy.heads.base import check_params
from robopolicy.heads.diffusion import DiffusionHead, DiffusionParams


@dataclass
class EnergyDiffusionParams(DiffusionParams):
    prediction_type: Literal["epsilon", "sample"] = "sample"  # the clean-chunk estimate from the energy

    def __post_init__(self) -> None:
        super().__post_init__()
        check_params(self, [("prediction_type", self.prediction_type == "sample",
                              "'sample' (the energy's clean-chunk estimate)")])


class EnergyDiffusionHead(DiffusionHead):
    name = "energy_diffusion"
    Params = EnergyDiffusionParams
    params: EnergyDiffusionParams
    samples_with_autograd = True

    def _alpha_bar(self, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        """abar_t as (B, 1, 1) for timesteps t (a float or a (B,) tensor)."""
        index = torch.as_tensor(t, device=x.device).long().expand(x.shape[0])
        return self.alphas_cumprod.to(x.device)[index].to(x.dtype).view(-1, 1, 1)

    def energy(self, x: torch.Tensor, t: torch.Tensor | float, cond: torch.Tensor) -> torch.Tensor:
        """E_theta(x, t, cond) per sample: (B, T, D) -> (B,). Lower is more likely at noise level t."""
        abar = self._alpha_bar(t, x)
        residual = x - abar.sqrt() * self.net(x, t, cond)
        return (residual.pow(2) / (2 * (1 - abar))).flatten(1).sum(-1)

    def denoiser_output(self, x: torch.Tensor, t: torch.Tensor | float, cond: torch.Tensor) -> torch.Tensor:
        """Tweedie's clean-chunk estimate (x - sigma_t^2 grad_x E) / sqrt(abar_t); differentiable w.r.t. the
        parameters whenever gradients are enabled (training and the fine-tuning update), plain otherwise."""
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            x_in = x if x.requires_grad else x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.energy(x_in, t, cond).sum(), x_in, create_graph=create_graph)
        abar = self._alpha_bar(t, x)
        return (x - (1 - abar) * grad) / abar.sqrt()
