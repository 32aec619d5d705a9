"""DPPO (Ren et al., "Diffusion Policy Policy Optimization"): the denoising chain as an inner MDP.

Each decision's last K' denoising steps are K' Gaussian "actions" of an inner MDP that share the decision's
advantage, discounted by `gamma_denoising` per step from the end of the chain. The policy is the pretrained
head wrapped in `robopolicy.heads.finetuned.FinetunedHead`: a trainable copy of its network runs the last K'
steps, the frozen pretrained network the first K - K'. Per step, log-probabilities are element-wise Gaussian
densities clamped to `log_prob_clamp` and averaged over the executed part of the chunk (DPPO's choice: ratios
stay near 1 whatever the chunk size); the PPO clip range grows from `clip_base` at the first fine-tuned step to
`clip` at the last (exponentially, rate `clip_rate`); with K' = 1 it is `clip` (DPPO's own code divides by
K' - 1 there). Update units are (decision, denoising step) pairs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from robopolicy.heads.base import Chain, check_params, gaussian_log_density
from robopolicy.heads.finetuned import FinetunedHead
from robopolicy.policy import Policy
from robopolicy.rl.algorithm import Algorithm, Decision, Minibatch
from robopolicy.specs import ConfigError


@dataclass
class DPPOParams:
    steps: int = 0  # K, the chain length (0: the pretrained head's inference steps)
    finetune_steps: int = 5  # K', fine-tuned last steps
    min_std: float = 0.1  # exploration std floor when sampling
    min_log_prob_std: float = 0.1  # std floor in log-probabilities
    noise_clip: float = 3.0  # standard-normal draws clamped to +-noise_clip
    action_clip: float = 1.0  # final normalized action clamped to +-action_clip
    deterministic_eval: bool = True  # deployment/evaluation run the chain's means (eta = 0)
    log_prob_clamp: list[float] | None = field(default_factory=lambda: [-5.0, 2.0])  # per element, or none
    log_prob_reduce: Literal["mean", "sum"] = "mean"  # over the chunk's elements
    executed_only: bool = True  # log-probabilities over the executed n_action_steps of the chunk only
    gamma_denoising: float = 0.99
    clip_base: float = 1e-3  # clip range at the first fine-tuned step
    clip: float = 0.01  # ... at the last one
    clip_rate: float = 3.0
    learn_std: bool = False  # a trained std replaces the head's (the Gaussian baseline)
    init_std: float = 1.0
    bc_coef: float = 0.0  # > 0: BC regularization, -log-prob of the pretrained policy's own chains (costs a sample)

    def __post_init__(self) -> None:
        clamp = self.log_prob_clamp
        check_params(self, [
            ("steps", self.steps >= 0, ">= 0 (0: the pretrained head's inference steps)"),
            ("finetune_steps", self.finetune_steps >= 1, ">= 1"),
            ("log_prob_clamp", clamp is None or (len(clamp) == 2 and clamp[0] < clamp[1]), "[low, high] or absent"),
            ("gamma_denoising", 0 < self.gamma_denoising <= 1, "in (0, 1]"),
            ("clip_base", 0 < self.clip_base <= self.clip, f"in (0, clip = {self.clip}]"),
            ("clip", self.clip > 0, "> 0"),
            ("bc_coef", self.bc_coef >= 0, ">= 0"),
        ])


def _check_chain(existing: dict, wanted: dict) -> None:
    for key, value in wanted.items():
        if key != "base" and existing.get(key) != value:
            raise ConfigError(f"algo.params: the checkpoint's fine-tuned chain has {key} = {existing.get(key)!r}, "
                              f"the config asks for {value!r}")


class DPPO(Algorithm):
    name = "dppo"
    Params = DPPOParams
    params: DPPOParams

    def _chain_settings(self, pretrained_steps: int) -> dict:
        p = self.params
        steps = p.steps or pretrained_steps
        if p.finetune_steps > steps:
            raise ConfigError(f"algo.params.finetune_steps: expected at most the chain's K = {steps} steps, "
                              f"got K' = {p.finetune_steps}")
        return {"steps": steps, "finetune_steps": p.finetune_steps, "min_std": p.min_std,
                "min_log_prob_std": p.min_log_prob_std, "noise_clip": p.noise_clip, "action_clip": p.action_clip,
                "deterministic": p.deterministic_eval, "learn_std": p.learn_std, "init_std": p.init_std}

    def prepare_policy(self, policy: Policy) -> Policy:
        """Wrap the pretrained head (both copies start from its weights); a fine-tuned policy is kept as is."""
        head_config = policy.config.head
        if head_config.name == FinetunedHead.name:  # resuming: the checkpoint holds the fine-tuned chain
            _check_chain(head_config.params, self._chain_settings(head_config.params["steps"]))
            tuned = policy
        else:
            if policy.head.noise_shape(1, 1)[1] == 0 and not self.params.learn_std:
                raise ConfigError(f"checkpoint: its {head_config.name} head samples without noise, so it has no "
                                  f"denoising chain for {self.name} to fine-tune (use a diffusion, flow or "
                                  "consistency checkpoint)")
            settings = self._chain_settings(policy.head.default_chain_steps())
            config = dataclasses.replace(policy.config, head=FinetunedHead.wrap(head_config, **settings))
            tuned = Policy(config).to(policy.device)
            state = {}
            for key, value in policy.state_dict().items():
                if key.startswith("head."):
                    state[f"head.base.{key[5:]}"] = state[f"head.finetuned.{key[5:]}"] = value
                else:
                    state[key] = value
            missing, unexpected = tuned.load_state_dict(state, strict=False)
            if unexpected or set(missing) - {"head.log_std"}:
                raise ConfigError(f"checkpoint: its weights do not fit the fine-tuned policy (missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]})")
        tuned.requires_grad_(False)
        tuned.head.finetuned.requires_grad_(True)
        if tuned.head.log_std is not None:
            tuned.head.log_std.requires_grad_(True)
        return tuned

    @property
    def head(self) -> FinetunedHead:
        return self.policy.head  # type: ignore[return-value]

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.policy.parameters() if p.requires_grad]

    @property
    def units_per_decision(self) -> int:
        return self.head.params.finetune_steps

    # ---- log-probabilities ----------------------------------------------------------------------------------

    def _reduced_log_prob(self, x_next: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """Per-transition log-probability: element-wise densities, clamped, over the executed actions."""
        density = gaussian_log_density(x_next, mean, std)
        if self.params.executed_only:
            density = density[:, : self.context.n_action_steps]
        if self.params.log_prob_clamp is not None:
            density = density.clamp(*self.params.log_prob_clamp)
        flat = density.flatten(1)
        return flat.mean(-1) if self.params.log_prob_reduce == "mean" else flat.sum(-1)

    def act(self, cond: torch.Tensor) -> Decision:
        head = self.head
        chain = head.sample_chain(cond)
        with torch.no_grad():
            x_next, mean, std = head.chain_transitions(cond, chain)
            log_prob = self._reduced_log_prob(x_next, mean, std).view_as(chain.log_probs)
            self._chain_std = float(std.clamp(min=head.params.min_std).mean())
            actions = self.policy.unnormalize_action(chain.actions)
        store = {"latents": chain.latents, "log_prob": log_prob}
        if self.params.bc_coef > 0:  # the frozen pretrained head's own chain: the BC target
            reference = head.base.sample_chain(cond, steps=head.params.steps)
            store["bc_latents"] = reference.latents[:, head.first_finetuned_step:]
        return Decision(actions, store)

    def log_ratio(self, batch: Minibatch) -> torch.Tensor:
        old = batch.store["log_prob"]
        chain = Chain(batch.store["latents"], old, first_step=self.head.first_finetuned_step)
        new = self._reduced_log_prob(*self.head.chain_transitions(batch.cond, chain, batch.unit))
        return new - old[torch.arange(old.shape[0], device=old.device), batch.unit]

    def extra_loss(self, batch: Minibatch) -> tuple[torch.Tensor, dict[str, float]]:
        """BC regularization: the trained steps' -log-probability of the pretrained policy's chains."""
        if self.params.bc_coef == 0:
            return super().extra_loss(batch)
        chain = Chain(batch.store["bc_latents"], batch.store["log_prob"], first_step=self.head.first_finetuned_step)
        bc_loss = -self._reduced_log_prob(*self.head.chain_transitions(batch.cond, chain, batch.unit)).mean()
        return self.params.bc_coef * bc_loss, {"bc_loss": float(bc_loss.detach())}

    # ---- per-step clipping and discount ---------------------------------------------------------------------

    def clip_range(self, unit: torch.Tensor, default: float) -> torch.Tensor:
        p, k = self.params, self.units_per_decision
        if k == 1:
            return torch.full(unit.shape, p.clip, device=unit.device)
        t = unit.float() / (k - 1)
        return p.clip_base + (p.clip - p.clip_base) * torch.expm1(p.clip_rate * t) / math.expm1(p.clip_rate)

    def advantage_weight(self, unit: torch.Tensor) -> torch.Tensor:
        return self.params.gamma_denoising ** (self.units_per_decision - 1 - unit).float()

    def rollout_stats(self, store: dict[str, torch.Tensor]) -> dict[str, float]:
        """The mean exploration std over the fine-tuned steps of the iteration's last decision."""
        return {"chain_std": getattr(self, "_chain_std", float("nan"))}
