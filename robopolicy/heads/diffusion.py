"""Diffusion head (DDPM training, DDPM/DDIM sampling) built on diffusers' schedulers.

The RL hooks expose each reverse step as a Gaussian, N(posterior mean, std^2) with std floored at
`min_std`, as DPPO does: DDPM uses the posterior variance, DDIM uses eta * sigma_t (eta > 0).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler

from robopolicy.heads import register_head
from robopolicy.heads.base import Head, randn
from robopolicy.nn.backbones import build_backbone
from robopolicy.specs import ConfigError


@dataclass
class DiffusionParams:
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: Literal["epsilon", "sample"] = "epsilon"
    sampler: Literal["ddpm", "ddim"] = "ddim"
    inference_steps: int = 10
    eta: float = 0.0
    clip_sample: bool = True
    chain_sampler: Literal["ddpm", "ddim"] = "ddpm"
    chain_eta: float = 1.0
    min_std: float = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.inference_steps <= self.num_train_timesteps:
            raise ConfigError(f"head.params.inference_steps: expected 1..{self.num_train_timesteps}, "
                              f"got {self.inference_steps}")
        if self.chain_sampler == "ddim" and self.chain_eta <= 0:
            raise ConfigError(f"head.params.chain_eta: expected > 0 for a stochastic DDIM chain, got {self.chain_eta}")
        if self.min_std <= 0:
            raise ConfigError(f"head.params.min_std: expected > 0, got {self.min_std}")


@register_head
class DiffusionHead(Head):
    name = "diffusion"
    Params = DiffusionParams
    params: DiffusionParams

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        p = self.params
        self.net = build_backbone(self.backbone_cfg, self.action_dim, self.horizon, self.cond_dim)
        common = dict(num_train_timesteps=p.num_train_timesteps, beta_schedule=p.beta_schedule,
                      prediction_type=p.prediction_type, clip_sample=p.clip_sample)
        self.train_scheduler = DDPMScheduler(**common)
        self.inference_scheduler = (DDIMScheduler(**common) if p.sampler == "ddim" else DDPMScheduler(**common))
        self.register_buffer("alphas_cumprod", self.train_scheduler.alphas_cumprod.clone().float(), persistent=False)

    def loss(self, cond: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        noise = torch.randn_like(actions)
        t = torch.randint(0, self.params.num_train_timesteps, (actions.shape[0],), device=actions.device)
        noisy = self.train_scheduler.add_noise(actions, noise, t)
        pred = self.net(noisy, t, cond)
        target = noise if self.params.prediction_type == "epsilon" else actions
        return F.mse_loss(pred, target)

    def sample(self, cond: torch.Tensor, steps: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        scheduler = copy.copy(self.inference_scheduler)  # set_timesteps mutates; keep calls independent
        scheduler.set_timesteps(steps or self.params.inference_steps)
        x = randn((cond.shape[0], *self.chunk_shape), generator, cond)
        extra = {"eta": self.params.eta} if isinstance(scheduler, DDIMScheduler) else {}
        for t in scheduler.timesteps:
            out = self.net(x, t.to(cond.device), cond)
            x = scheduler.step(out, t, x, generator=generator, **extra).prev_sample
        return x

    # ---- RL hooks ---------------------------------------------------------------------------------------------

    def _timesteps(self, steps: int, device: torch.device) -> torch.Tensor:
        """Descending train timesteps of a `steps`-step chain, followed by -1 (the clean sample)."""
        ratio = self.params.num_train_timesteps // steps
        ts = torch.arange(steps - 1, -1, -1, device=device) * ratio
        return torch.cat([ts, torch.tensor([-1], device=device)])

    def _acp(self, t: torch.Tensor) -> torch.Tensor:
        acp = self.alphas_cumprod.to(t.device)
        return torch.where(t >= 0, acp[t.clamp(min=0)], torch.ones_like(acp[0]))

    def initial_latent(self, batch: int, cond: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return randn((batch, *self.chunk_shape), generator, cond)

    def _split_prediction(self, x: torch.Tensor, out: torch.Tensor, a_t: torch.Tensor):
        """(clipped x0, eps) from the network output, as diffusers' schedulers compute them."""
        sa, s1a = a_t.sqrt(), (1 - a_t).sqrt()
        if self.params.prediction_type == "epsilon":
            x0, eps = (x - s1a * out) / sa, out
        else:
            x0, eps = out, (x - sa * out) / s1a
        if self.params.clip_sample:
            x0 = x0.clamp(-1.0, 1.0)
        return x0, eps

    def transition(self, cond: torch.Tensor, x: torch.Tensor, k: torch.Tensor | int,
                   steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        ts = self._timesteps(steps, x.device)
        k = torch.as_tensor(k, device=x.device).expand(x.shape[0])
        t, t_prev = ts[k], ts[k + 1]
        a_t = self._acp(t).view(-1, 1, 1)
        a_prev = self._acp(t_prev).view(-1, 1, 1)
        x0, eps = self._split_prediction(x, self.net(x, t, cond), a_t)
        if self.params.chain_sampler == "ddpm":
            beta = 1 - a_t / a_prev
            mean = (a_prev.sqrt() * beta * x0 + (a_t / a_prev).sqrt() * (1 - a_prev) * x) / (1 - a_t)
            var = beta * (1 - a_prev) / (1 - a_t)
        else:
            var = self.params.chain_eta ** 2 * (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
            mean = a_prev.sqrt() * x0 + (1 - a_prev - var).clamp(min=0).sqrt() * eps
        std = var.clamp(min=0).sqrt().clamp(min=self.params.min_std).expand_as(mean)
        return mean, std

    def predict_clean(self, x_sigma: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Clean-action estimate for x = a + sigma * z (EDM convention), used as a distillation teacher.

        sigma is mapped to the nearest trained timestep, so teachers should be queried on `sigma_grid()`.
        """
        acp_sigma = 1.0 / (1.0 + sigma.reshape(-1) ** 2)
        t = (self.alphas_cumprod.to(x_sigma.device)[None, :] - acp_sigma[:, None]).abs().argmin(-1)
        a_t = self._acp(t).view(-1, 1, 1)
        x = x_sigma * a_t.sqrt()
        x0, _ = self._split_prediction(x, self.net(x, t, cond), a_t)
        return x0

    def sigma_grid(self) -> torch.Tensor:
        """Noise levels (ascending) at which this head was trained, in the EDM convention."""
        acp = self.alphas_cumprod
        return ((1 - acp) / acp).sqrt()
