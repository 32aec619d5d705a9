"""A head fine-tuned as a denoising chain (DPPO): the last K' of K chain steps use a trained copy of the network.

`finetuned` wraps any head that has a stochastic chain (`initial_latent` / `transition`): the pretrained head
(`base`, frozen) runs chain steps 0..K-K'-1, a deep copy of it (`finetuned`, trained) runs steps K-K'..K-1.
It is a registered head, so a fine-tuned checkpoint is an ordinary policy checkpoint (`head.name = "finetuned"`,
the pretrained head's config inside its params) that `Policy.load` and `robopolicy eval` read unchanged, and its
`sample_from_noise` (what `predict_action`, `compile` and AOT run) is the fine-tuned chain: when
`deterministic` (the default for evaluation) each step is the wrapped head's own deterministic sampler step
(`sampler_transition`: DDIM with eta = 0 for a diffusion head, so an untouched chain deploys exactly as the
pretrained policy), else samples of the stochastic chain with the exploration std floor.

Two std floors, as DPPO keeps them apart: `min_std` for exploration when sampling, `min_log_prob_std` in
log-probabilities. The wrapped heads' own floor is lowered to the smaller of the two, and each use applies its
own. Standard-normal draws are clamped to +-`noise_clip`, the final action to +-`action_clip` (normalized).
With `learn_std` the std is a trained per-dimension parameter instead (the Gaussian PPO baseline on a 1-step
regression chain).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robopolicy.heads.base import Chain, Head, check_params, gaussian_log_prob, randn
from robopolicy.heads.wrapper import WrapperHead
from robopolicy.specs import BackboneConfig, ConfigError, HeadConfig


@dataclass
class FinetunedParams:
    base: HeadConfig = field(default_factory=HeadConfig)  # the pretrained head
    steps: int = 10  # K: chain steps
    finetune_steps: int = 10  # K': the last K' steps use the trained copy
    min_std: float = 0.1  # exploration std floor when sampling
    min_log_prob_std: float = 0.1  # std floor in log-probabilities
    noise_clip: float = 3.0  # standard-normal draws are clamped to [-noise_clip, noise_clip]
    action_clip: float = 1.0  # the final (normalized) action is clamped to [-action_clip, action_clip]
    deterministic: bool = True  # deployment runs the chain's means (eta = 0) instead of sampling
    learn_std: bool = False  # a trained per-dimension std (log-parameterized) replaces the head's
    init_std: float = 1.0  # its initial value

    def __post_init__(self) -> None:
        check_params(self, [
            ("steps", self.steps >= 1, ">= 1"),
            ("finetune_steps", 1 <= self.finetune_steps <= self.steps, f"between 1 and steps (K = {self.steps})"),
            ("min_std", self.min_std > 0, "> 0"),
            ("min_log_prob_std", self.min_log_prob_std > 0, "> 0"),
            ("noise_clip", self.noise_clip > 0, "> 0"),
            ("action_clip", self.action_clip > 0, "> 0"),
            ("init_std", self.init_std > 0, "> 0"),
            ("base", self.base.name != "finetuned", "a pretrained head, not another fine-tuned one"),
        ])


def _lower_floor(head: Head, floor: float) -> None:
    if hasattr(head.params, "min_std"):
        head.params.min_std = min(head.params.min_std, floor)


class FinetunedHead(WrapperHead):
    name = "finetuned"
    Params = FinetunedParams
    params: FinetunedParams

    def __init__(self, params: dict[str, Any], action_dim: int, horizon: int, cond_dim: int,
                 backbone: BackboneConfig) -> None:
        super().__init__(params, action_dim, horizon, cond_dim, backbone)
        p = self.params
        if self.base.noise_shape(1, p.steps)[1] == 0 and not p.learn_std:
            raise ConfigError(f"head.params.base: the {p.base.name} head samples without noise, so it has no "
                              "denoising chain to fine-tune (use a diffusion, flow or consistency head, or "
                              "learn_std = true for a Gaussian policy)")
        floor = min(p.min_std, p.min_log_prob_std)
        _lower_floor(self.base, floor)
        self.finetuned = copy.deepcopy(self.base)
        self.base.requires_grad_(False)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(p.init_std)).log()) if p.learn_std else None

    @classmethod
    def wrap(cls, head_config: HeadConfig, **chain: Any) -> HeadConfig:
        """The head config of `head_config`'s head fine-tuned with chain settings `chain` (FinetunedParams fields)."""
        if head_config.name == cls.name:
            raise ConfigError("head.name: the checkpoint is already fine-tuned; resume its run instead")
        return super().wrap(head_config, **chain)

    @property
    def first_finetuned_step(self) -> int:
        return self.params.steps - self.params.finetune_steps

    def loss(self, cond: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The pretrained head's BC loss on the trained copy (for BC regularization or further BC training)."""
        return self.finetuned.loss(cond, actions)

    # ---- the chain ----------------------------------------------------------------------------------------

    def resolve_steps(self, steps: int | None) -> int:
        if steps not in (None, self.params.steps):
            raise ValueError(f"a fine-tuned chain runs its {self.params.steps} steps, got steps={steps}")
        return self.params.steps

    def prepare_sampling(self, steps: int) -> None:
        self.base.prepare_sampling(steps)
        self.finetuned.prepare_sampling(steps)

    def _deploy_mean(self, cond: torch.Tensor, x: torch.Tensor, k: int, steps: int) -> torch.Tensor:
        """Step k of the deterministic deployment: the wrapped head's own sampler step where it has one
        (`sampler_transition`: DDIM with eta = 0, an ODE step), else the chain's mean."""
        head = self.finetuned if k >= self.first_finetuned_step else self.base
        step = getattr(head, "sampler_transition", head.transition)
        return step(cond, x, k, steps)[0]

    def transition(self, cond: torch.Tensor, x: torch.Tensor, k: torch.Tensor | int,
                   steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of step k from the frozen or the trained network; std floored at min(min_std,
        min_log_prob_std) (or the learned std). k may be a (B,) tensor mixing both kinds of steps."""
        first = self.first_finetuned_step
        if isinstance(k, int):
            mean, std = (self.finetuned if k >= first else self.base).transition(cond, x, k, steps)
        elif bool((k >= first).all()):
            mean, std = self.finetuned.transition(cond, x, k, steps)
        else:
            tuned = (k >= first).view(-1, 1, 1)
            mean_t, std_t = self.finetuned.transition(cond, x, k, steps)
            mean_b, std_b = self.base.transition(cond, x, k, steps)
            mean, std = torch.where(tuned, mean_t, mean_b), torch.where(tuned, std_t, std_b)
        if self.log_std is not None:
            std = self.log_std.exp().expand_as(mean)
        return mean, std

    def _next(self, mean: torch.Tensor, std: torch.Tensor, noise: torch.Tensor, last: bool) -> torch.Tensor:
        x = mean + std.clamp(min=self.params.min_std) * noise.clamp(-self.params.noise_clip, self.params.noise_clip)
        return x.clamp(-self.params.action_clip, self.params.action_clip) if last else x

    def noise_shape(self, batch: int, steps: int) -> tuple[int, ...]:
        return (batch, 1 if self.params.deterministic else self.params.steps + 1, *self.chunk_shape)

    def sample_from_noise(self, cond: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
        """Deployment: the chain's means (deterministic) or samples, the last K' steps from the trained copy."""
        k_total = self.params.steps
        x = noise[:, 0]
        for k in range(k_total):
            last = k + 1 == k_total
            if self.params.deterministic:
                mean = self._deploy_mean(cond, x, k, k_total)
                x = mean.clamp(-self.params.action_clip, self.params.action_clip) if last else mean
            else:
                x = self._next(*self.transition(cond, x, k, k_total), noise[:, k + 1], last)
        return x

    def sample_chain(self, cond: torch.Tensor, steps: int | None = None,
                     generator: torch.Generator | None = None, keep_all: bool = False) -> Chain:
        """Sample the chain for a rollout (no gradient), keeping the fine-tuned steps only (all with `keep_all`).

        Exploration uses `min_std`; the stored log-probabilities use `min_log_prob_std`, as `chain_log_prob`
        recomputes them, so PPO's ratios start at 1.
        """
        k_total = self.resolve_steps(steps)
        first = 0 if keep_all else self.first_finetuned_step
        with torch.no_grad():
            x = self.initial_latent(cond.shape[0], cond, generator)
            latents, log_probs = [], []
            for k in range(k_total):
                if k == first:
                    latents.append(x)
                mean, std = self.transition(cond, x, k, k_total)
                x = self._next(mean, std, randn(tuple(mean.shape), generator, mean), k + 1 == k_total)
                if k >= first:
                    latents.append(x)
                    log_probs.append(self._log_prob(x, mean, std))
        return Chain(torch.stack(latents, 1), torch.stack(log_probs, 1), first_step=first)

    def _log_prob(self, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        return gaussian_log_prob(x, mean, std.clamp(min=self.params.min_log_prob_std))

    def chain_transitions(self, cond: torch.Tensor, chain: Chain,
                          step_idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As `Head.chain_transitions`, with the std floored at `min_log_prob_std`."""
        x_next, mean, std = super().chain_transitions(cond, chain, step_idx)
        return x_next, mean, std.clamp(min=self.params.min_log_prob_std)
