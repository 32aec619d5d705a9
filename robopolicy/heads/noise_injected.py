"""A few-step flow or consistency head made a Gaussian chain by a learned noise std (ReinFlow-style fine-tuning).

A 1-4-step flow or consistency sampler is (nearly) deterministic, so it has no usable likelihood. A small
network sigma_phi(cond, k), bounded in [std_floor, std_ceiling], adds Gaussian noise at every sampling step
and turns the sampler into a Markov chain x_0 -> ... -> x_K = action with transitions

    p(x_{k+1} | x_k) = N(mean_k(x_k), base_k^2 + sigma_phi(cond, k)^2)

where (mean_k, base_k) is the wrapped head's own step (`sampler_transition`: one integrator step with base 0 for
flow; the denoised estimate and its restart noise for consistency). Every transition is Gaussian, so the chain's
log-probability is exact and the shared `Head.sample_chain` / `Head.chain_log_prob` give it. `noise_injected`
is a registered head holding the wrapped head (`base`, trained as a whole) and the noise network, so a
fine-tuned checkpoint is an ordinary policy checkpoint that keeps the noise network for resume; deployment
(`sample_from_noise`: `predict_action`, `compile`, AOT) runs the wrapped head's own sampler with no injected
noise, the chain's mean path, or with `deterministic = false` the noise-injected chain itself, the policy PPO
optimized (measured on push_puck after 400 ReinFlow iterations: 88 % sampled vs 86 % mean path on 50 held-out
seeds, no real difference; DPPO's Hopper chain deployed sampled scored 1485 against 837 for its mean path),
its injected std optionally scaled down (`deploy_std_scale`: the energy_diffusion head's 2-step chain on push_puck
scored 79 % as trained and 84 % at half its std, on 200 test seeds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robopolicy.heads.base import check_params
from robopolicy.heads.wrapper import WrapperHead
from robopolicy.nn.encoder import mlp
from robopolicy.specs import BackboneConfig, ConfigError, HeadConfig


class NoiseStdNet(nn.Module):
    """sigma_phi(cond, k) in [floor, ceiling] per chunk element; starts at `init` everywhere.

    The step index is a learned embedding; conditioning is detached, so the noise network never moves the
    encoder. The output layer starts at zero, so the initial std is exactly `init` (the bound's sigmoid
    inverted), whatever the conditioning.
    """

    def __init__(self, cond_dim: int, steps: int, chunk_shape: tuple[int, int], floor: float, ceiling: float,
                 init: float, hidden: int = 64) -> None:
        super().__init__()
        if not 0 < floor < ceiling:
            raise ValueError(f"noise std bounds: expected 0 < floor < ceiling, got floor={floor}, ceiling={ceiling}")
        if not floor < init < ceiling:
            raise ValueError(f"noise std init: expected in ({floor}, {ceiling}), got {init}")
        self.floor, self.ceiling, self.chunk_shape = floor, ceiling, chunk_shape
        self.step_embed = nn.Embedding(steps, hidden)
        self.net = mlp([cond_dim + hidden, hidden, chunk_shape[0] * chunk_shape[1]], nn.Tanh)
        last = self.net[-1]
        assert isinstance(last, nn.Linear)
        frac = (init - floor) / (ceiling - floor)
        nn.init.zeros_(last.weight)
        nn.init.constant_(last.bias, math.log(frac / (1 - frac)))

    def forward(self, cond: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """(B, T, D) stds for conditioning (B, C) and step indices k (B,)."""
        h = self.net(torch.cat([cond.detach(), self.step_embed(k)], -1))
        return (self.floor + (self.ceiling - self.floor) * torch.sigmoid(h)).view(-1, *self.chunk_shape)


@dataclass
class NoiseInjectedParams:
    base: HeadConfig = field(default_factory=HeadConfig)  # the pretrained flow or consistency head
    steps: int = 4  # chain (and deployed sampler) steps
    std_floor: float = 0.03  # bounds of the learned std, in normalized action units
    std_ceiling: float = 0.15
    std_init: float = 0.08
    noise_hidden: int = 64
    deterministic: bool = True  # deployment runs the wrapped sampler (True) or the noise-injected chain
    # the deployed chain (deterministic = false) injects sigma_phi times this: 1 is the chain PPO trained, less
    # trades the exploration PPO wants for the precision a deployment wants
    deploy_std_scale: float = 1.0

    def __post_init__(self) -> None:
        check_params(self, [
            ("steps", self.steps >= 1, ">= 1"),
            ("std_floor", self.std_floor > 0, "> 0"),
            ("std_ceiling", self.std_ceiling > self.std_floor, f"> std_floor = {self.std_floor}"),
            ("std_init", self.std_floor < self.std_init < self.std_ceiling,
             f"in (std_floor, std_ceiling) = ({self.std_floor}, {self.std_ceiling})"),
            ("noise_hidden", self.noise_hidden >= 1, ">= 1"),
            ("deploy_std_scale", self.deploy_std_scale >= 0, ">= 0"),
            ("base", self.base.name != "noise_injected", "a pretrained head, not another noise-injected one"),
        ])


class NoiseInjectedHead(WrapperHead):
    name = "noise_injected"
    Params = NoiseInjectedParams
    params: NoiseInjectedParams

    def __init__(self, params: dict[str, Any], action_dim: int, horizon: int, cond_dim: int,
                 backbone: BackboneConfig) -> None:
        super().__init__(params, action_dim, horizon, cond_dim, backbone)
        p = self.params
        if not callable(getattr(self.base, "sampler_transition", None)):
            raise ConfigError(f"head.params.base: noise injection needs a head whose sampler steps are Gaussian "
                              f"(flow, consistency), got {p.base.name!r}")
        self.noise = NoiseStdNet(cond_dim, p.steps, self.chunk_shape, p.std_floor, p.std_ceiling, p.std_init,
                                 p.noise_hidden)

    def loss(self, cond: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The wrapped head's BC loss (for BC regularization or further BC training)."""
        return self.base.loss(cond, actions)

    # ---- deployment: the wrapped head's own sampler, or the chain ------------------------------------------

    def resolve_steps(self, steps: int | None) -> int:
        if not self.params.deterministic and steps not in (None, self.params.steps):
            raise ValueError(f"the noise-injected chain runs its {self.params.steps} steps, got steps={steps}")
        return steps or self.params.steps

    def prepare_sampling(self, steps: int) -> None:
        self.base.prepare_sampling(steps)

    def noise_shape(self, batch: int, steps: int) -> tuple[int, ...]:
        if self.params.deterministic:
            return self.base.noise_shape(batch, steps)
        return (batch, steps + 1, *self.chunk_shape)

    def sample_from_noise(self, cond: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
        """The wrapped sampler, or the chain as `sample_chain` draws it (x_0 from noise slot 0, step k's
        Gaussian from slot k + 1), its injected std scaled by `deploy_std_scale`."""
        if self.params.deterministic:
            return self.base.sample_from_noise(cond, noise, steps)
        x = self.base.latent_from_noise(noise[:, 0])
        for k in range(steps):
            mean, std = self.transition(cond, x, k, steps, self.params.deploy_std_scale)
            x = mean + std * noise[:, k + 1]
        return x

    # ---- the chain (its initial latent is the wrapped head's) ---------------------------------------------

    def transition(self, cond: torch.Tensor, x: torch.Tensor, k: torch.Tensor | int,
                   steps: int, sigma_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std): the wrapped sampler's step with sqrt(base^2 + (sigma_scale sigma_phi)^2) as its std."""
        if steps != self.params.steps:
            raise ValueError(f"the noise-injected chain has {self.params.steps} steps, got steps={steps}")
        k = torch.as_tensor(k, device=x.device).expand(x.shape[0])
        mean, base = self.base.sampler_transition(cond, x, k, steps)  # type: ignore[operator]  # checked in __init__
        sigma = sigma_scale * self.noise(cond, k)
        return mean, (base * base + sigma * sigma).sqrt()
