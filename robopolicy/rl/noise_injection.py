"""Noise-injected chains (ReinFlow-style) for few-step flow and consistency heads.

A 1-4-step flow or consistency sampler is (nearly) deterministic, so it has no usable likelihood. A small
network sigma_phi(cond, k), bounded in [floor, ceiling], adds Gaussian noise at every sampling step and turns
the sampler into a Markov chain x_0 -> ... -> x_K = action with transitions

    p(x_{k+1} | x_k) = N(mean_k(x_k), base_k^2 + sigma_phi(cond, k)^2)

where (mean_k, base_k) is the head's own step (`Head.sampler_transition`: the integrator step with base 0 for
flow; the denoised estimate with its restart noise for consistency). Every transition is Gaussian, so the
chain's log-probability is exact and the PPO update of part 1 applies unchanged. The deployed sampler is the
head's own (zero injected noise), so deployment does not need the noise network; it is fine-tuning state,
saved with the algorithm's state for resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from robopolicy.heads.base import Chain, Head, gaussian_log_prob, randn
from robopolicy.nn.encoder import mlp
from robopolicy.rl.algorithm import Algorithm, Decision, Minibatch
from robopolicy.specs import ConfigError

if TYPE_CHECKING:
    from robopolicy.policy import Policy


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

    @property
    def steps(self) -> int:
        return self.step_embed.num_embeddings

    def forward(self, cond: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """(B, T, D) stds for conditioning (B, C) and step indices k (B,)."""
        h = self.net(torch.cat([cond.detach(), self.step_embed(k)], -1))
        return (self.floor + (self.ceiling - self.floor) * torch.sigmoid(h)).view(-1, *self.chunk_shape)


def transition(head: Head, noise: NoiseStdNet, cond: torch.Tensor, x: torch.Tensor,
               k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the noise-injected step k from x; k is a (B,) tensor."""
    mean, base = head.sampler_transition(cond, x, k, noise.steps)  # type: ignore[attr-defined]
    sigma = noise(cond, k)
    return mean, (base * base + sigma * sigma).sqrt()


def sample_chain(head: Head, noise: NoiseStdNet, cond: torch.Tensor,
                 generator: torch.Generator | None = None) -> Chain:
    """Sample the chain x_0..x_K and its per-step log-probabilities (no gradient; rollouts)."""
    with torch.no_grad():
        b = cond.shape[0]
        x = head.initial_latent(b, cond, generator)
        latents, log_probs = [x], []
        for k in range(noise.steps):
            mean, std = transition(head, noise, cond, x, torch.full((b,), k, device=cond.device))
            x = mean + std * randn(tuple(mean.shape), generator, mean)
            latents.append(x)
            log_probs.append(gaussian_log_prob(x, mean, std))
    return Chain(torch.stack(latents, 1), torch.stack(log_probs, 1))


def chain_log_prob(head: Head, noise: NoiseStdNet, cond: torch.Tensor, chain: Chain) -> torch.Tensor:
    """Log-probabilities (B, K) of stored chains under the current head and noise network (with gradient);
    all K transitions in one batched network call."""
    b, k = chain.log_probs.shape
    x_prev = chain.latents[:, :-1].flatten(0, 1)
    x_next = chain.latents[:, 1:].flatten(0, 1)
    step_idx = torch.arange(k, device=cond.device).repeat(b)
    mean, std = transition(head, noise, cond.repeat_interleave(k, 0), x_prev, step_idx)
    return gaussian_log_prob(x_next, mean, std).reshape(b, k)


# ---- the algorithm ----------------------------------------------------------------------------------------------


@dataclass
class ReinFlowParams:
    steps: int = 0  # chain steps; 0: the head's inference_steps (1-4 are what this is for)
    std_floor: float = 0.03  # bounds of the learned noise std, in normalized action units
    std_ceiling: float = 0.15
    std_init: float = 0.08
    noise_hidden: int = 64
    max_log_ratio: float = 5.0  # |log pi_new - log pi_old| clamp before exp

    def __post_init__(self) -> None:
        checks = [("steps", self.steps >= 0, ">= 0"), ("std_floor", self.std_floor > 0, "> 0"),
                  ("std_ceiling", self.std_ceiling > self.std_floor, f"> std_floor={self.std_floor}"),
                  ("std_init", self.std_floor < self.std_init < self.std_ceiling,
                   f"in (std_floor, std_ceiling) = ({self.std_floor}, {self.std_ceiling})"),
                  ("noise_hidden", self.noise_hidden >= 1, ">= 1"),
                  ("max_log_ratio", self.max_log_ratio > 0, "> 0")]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"algo.params.{name}: expected {expected}, got {getattr(self, name)!r}")


class ReinFlow(Algorithm):
    """PPO over the whole noise-injected chain: one unit per decision, log-ratio summed over its K steps."""

    name = "reinflow"
    Params = ReinFlowParams
    params: ReinFlowParams

    def prepare_policy(self, policy: Policy) -> Policy:
        head = policy.head
        if not callable(getattr(head, "sampler_transition", None)):
            raise ConfigError(f"algo: reinflow fine-tunes heads with a few-step sampler (flow, consistency); the "
                              f"checkpoint's head is {head.name!r} (use dppo for diffusion, fpo for energy)")
        p = self.params
        steps = p.steps or head.default_chain_steps()
        self.noise = NoiseStdNet(head.cond_dim, steps, head.chunk_shape, p.std_floor, p.std_ceiling, p.std_init,
                                 p.noise_hidden).to(self.context.device)
        policy.encoder.requires_grad_(False)
        return policy

    def parameters(self) -> list[torch.nn.Parameter]:
        head = [q for q in self.policy.head.parameters() if q.requires_grad]
        return head + list(self.noise.parameters())

    def act(self, cond: torch.Tensor) -> Decision:
        chain = sample_chain(self.policy.head, self.noise, cond)
        return Decision(self.policy.unnormalize_action(chain.actions),
                        {"latents": chain.latents, "log_probs": chain.log_probs})

    def log_ratio(self, batch: Minibatch) -> torch.Tensor:
        chain = Chain(batch.store["latents"], batch.store["log_probs"])
        new = chain_log_prob(self.policy.head, self.noise, batch.cond, chain).sum(1)
        m = self.params.max_log_ratio
        return (new - chain.log_probs.sum(1)).clamp(-m, m)

    def rollout_stats(self, store: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"chain_log_prob": float(store["log_probs"].sum(1).mean())}
