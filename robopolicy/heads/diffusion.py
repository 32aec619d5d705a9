"""Diffusion head (DDPM training, DDPM/DDIM sampling) built on diffusers' schedulers.

The RL hooks expose each reverse step as a Gaussian, N(posterior mean, std^2) with std floored at
`min_std`, as DPPO does: DDPM uses the posterior variance, DDIM uses eta * sigma_t (eta > 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

# the defining module: diffusers' lazy top-level package types DDPMScheduler as an attribute-less stub
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

from robopolicy.heads.base import Head, axpby, check_params, randn


def _clamp_min(value, low: float):
    return value.clamp(min=low) if torch.is_tensor(value) else max(value, low)


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
        check_params(self, [
            ("inference_steps", 1 <= self.inference_steps <= self.num_train_timesteps,
             f"1..{self.num_train_timesteps}"),
            ("chain_eta", self.chain_sampler != "ddim" or self.chain_eta > 0, "> 0 for a stochastic DDIM chain"),
            ("min_std", self.min_std > 0, "> 0"),
        ])


class DiffusionHead(Head):
    name = "diffusion"
    Params = DiffusionParams
    params: DiffusionParams
    alphas_cumprod: torch.Tensor  # buffer

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        p = self.params
        self.train_scheduler = DDPMScheduler(num_train_timesteps=p.num_train_timesteps, beta_schedule=p.beta_schedule,
                                             prediction_type=p.prediction_type, clip_sample=p.clip_sample)
        self.register_buffer("alphas_cumprod", self.train_scheduler.alphas_cumprod.clone().float(), persistent=False)
        self._schedules: dict[int, tuple[list[int], list[float]]] = {}

    def denoiser_output(self, x: torch.Tensor, t: torch.Tensor | float, cond: torch.Tensor) -> torch.Tensor:
        """The prediction (noise or clean sample, per `prediction_type`) at timestep t: the network's output here;
        the diffusion-trained energy head (`robopolicy.heads.energy_diffusion`) derives it from its energy."""
        return self.net(x, t, cond)

    def loss(self, cond: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        noise = torch.randn_like(actions)
        t = torch.randint(0, self.params.num_train_timesteps, (actions.shape[0],), device=actions.device)
        noisy = self.train_scheduler.add_noise(actions, noise, t)
        pred = self.denoiser_output(noisy, t, cond)
        target = noise if self.params.prediction_type == "epsilon" else actions
        return F.mse_loss(pred, target)

    def prepare_sampling(self, steps: int) -> None:
        self._schedule(steps)

    def noise_shape(self, batch: int, steps: int) -> tuple[int, ...]:
        """The initial latent, plus one noise draw per step but the last for stochastic samplers."""
        stochastic = self.params.sampler == "ddpm" or self.params.eta > 0
        return (batch, steps if stochastic else 1, *self.chunk_shape)

    def sample_from_noise(self, cond: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
        """Reverse process with the configured sampler (DDIM eta or DDPM posterior), no std floor.

        The step arithmetic is diffusers' (tests compare against `DDIMScheduler.step`), but with
        per-step coefficients precomputed as floats: diffusers' step costs about as much as a small MLP
        forward, which would double low-dim inference latency.
        """
        ts, acp = self._schedule(steps)
        x = noise[:, 0]
        for k in range(steps):
            x, std = self._reverse_step(x, self.denoiser_output(x, float(ts[k]), cond), acp[k], acp[k + 1],
                                        self.params.sampler, self.params.eta)
            if k + 1 < steps and std > 0:
                x = torch.add(x, noise[:, k + 1], alpha=float(std))
            x = self.project_step(x)
        return x

    # ---- RL hooks ---------------------------------------------------------------------------------------------

    def _schedule(self, steps: int) -> tuple[list[int], list[float]]:
        """Descending train timesteps of a `steps`-step chain ("leading" spacing, as diffusers) and the
        cumulative alphas at each of them plus 1.0 for the clean end point (cached: it runs every call)."""
        if steps not in self._schedules:
            ratio = self.params.num_train_timesteps // steps
            ts = [k * ratio for k in range(steps - 1, -1, -1)]
            acp = self.train_scheduler.alphas_cumprod
            self._schedules[steps] = ts, [float(acp[t]) for t in ts] + [1.0]
        return self._schedules[steps]

    def _reverse_step(self, x: torch.Tensor, out: torch.Tensor, a_t, a_prev, sampler: str,
                      eta: float) -> tuple[torch.Tensor, torch.Tensor | float]:
        """Gaussian (mean, std) of x_prev given x_t; a_t/a_prev are floats or broadcastable tensors."""
        if self.params.prediction_type == "epsilon":
            x0, eps = axpby(a_t ** -0.5, x, -((1 - a_t) / a_t) ** 0.5, out), out
        else:
            x0, eps = out, axpby((1 - a_t) ** -0.5, x, -(a_t / (1 - a_t)) ** 0.5, out)
        if self.params.clip_sample:
            x0 = x0.clamp(-1.0, 1.0)
        if sampler == "ddpm":
            beta = 1 - a_t / a_prev
            var = beta * (1 - a_prev) / (1 - a_t)
            mean = axpby(a_prev ** 0.5 * beta / (1 - a_t), x0, (a_t / a_prev) ** 0.5 * (1 - a_prev) / (1 - a_t), x)
        else:
            var = eta ** 2 * (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
            mean = axpby(a_prev ** 0.5, x0, _clamp_min(1 - a_prev - var, 0.0) ** 0.5, eps)
        return mean, _clamp_min(var, 0.0) ** 0.5

    def initial_latent(self, batch: int, cond: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return randn((batch, *self.chunk_shape), generator, cond)

    def transition(self, cond: torch.Tensor, x: torch.Tensor, k: torch.Tensor | int,
                   steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = self._step_at(cond, x, k, steps, self.params.chain_sampler, self.params.chain_eta)
        return mean, torch.as_tensor(std).clamp(min=self.params.min_std).expand_as(mean)

    def sampler_transition(self, cond: torch.Tensor, x: torch.Tensor, k: torch.Tensor | int,
                           steps: int) -> tuple[torch.Tensor, torch.Tensor | float]:
        """(mean, std) of step k of the configured sampler (`sampler`, `eta`), unfloored: what a fine-tuned
        chain deploys deterministically (DDIM with eta = 0 for the default config)."""
        return self._step_at(cond, x, k, steps, self.params.sampler, self.params.eta)

    def _step_at(self, cond: torch.Tensor, x: torch.Tensor, k: torch.Tensor | int, steps: int, sampler: str,
                 eta: float) -> tuple[torch.Tensor, torch.Tensor | float]:
        ts, acp = self._schedule(steps)
        k = torch.as_tensor(k, device=x.device).expand(x.shape[0])
        t = torch.tensor(ts, device=x.device)[k]
        acp_table = torch.tensor(acp, device=x.device, dtype=x.dtype)
        a_t, a_prev = acp_table[k].view(-1, 1, 1), acp_table[k + 1].view(-1, 1, 1)
        return self._reverse_step(x, self.denoiser_output(x, t, cond), a_t, a_prev, sampler, eta)

    def predict_clean(self, x_sigma: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Clean-action estimate for x = a + sigma * z (EDM convention), used as a distillation teacher.

        sigma is mapped to the nearest trained timestep, so teachers should be queried on `sigma_grid()`.
        """
        acp = self.alphas_cumprod.to(x_sigma.device)
        t = (acp[None, :] - 1.0 / (1.0 + sigma.reshape(-1, 1) ** 2)).abs().argmin(-1)
        a_t = acp[t].view(-1, 1, 1)
        x = x_sigma * a_t.sqrt()
        out = self.denoiser_output(x, t, cond)
        x0 = (x - (1 - a_t).sqrt() * out) / a_t.sqrt() if self.params.prediction_type == "epsilon" else out
        return x0.clamp(-1.0, 1.0) if self.params.clip_sample else x0

    def sigma_grid(self) -> torch.Tensor:
        """Noise levels (ascending) at which this head was trained, in the EDM convention."""
        acp = self.alphas_cumprod
        return ((1 - acp) / acp).sqrt()
