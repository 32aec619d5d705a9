"""Noise-injected fine-tuning (ReinFlow, Zhang et al. 2025) for few-step flow and consistency heads (`--algo reinflow`).

The pretrained head is wrapped in `robopolicy.heads.noise_injected.NoiseInjectedHead`: a learned, bounded noise
std at every sampling step makes the 1-4-step sampler a Markov chain with exact Gaussian log-probabilities.
PPO then runs over whole chains: one update unit per decision, its log-ratio the sum over the K steps (the
chain's joint density, as ReinFlow uses), clamped to +-`max_log_ratio` before the exponential. Per step, the
element-wise Gaussian log-densities are taken over the executed part of the chunk only (the rest never reached
the environment) and, with `log_prob_reduce = "mean"` (default), averaged rather than summed, as DPPO does: a
sum over a 16 x 2 chunk with stds near 0.08 moved the ratio to 30+ within one epoch on push_puck, the mean keeps
it near 1 at the same learning rate. The whole head and the noise network are trained, the noise network at
`noise_lr_scale` times the actor's learning rate; the deployed sampler is the head's own, without injected
noise, or with `deterministic_eval = false` the noise-injected chain, its std scaled by `deploy_std_scale`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch

from robopolicy.heads.base import Chain, check_params, gaussian_log_density
from robopolicy.heads.noise_injected import NoiseInjectedHead
from robopolicy.policy import Policy
from robopolicy.rl.algorithm import Algorithm, Decision, Minibatch
from robopolicy.specs import ConfigError


@dataclass
class ReinFlowParams:
    steps: int = 0  # chain steps; 0: the pretrained head's inference_steps (1-4 are what this is for)
    std_floor: float = 0.03  # bounds of the learned noise std, in normalized action units
    std_ceiling: float = 0.15
    std_init: float = 0.08
    noise_hidden: int = 64
    max_log_ratio: float = 5.0  # |log pi_new - log pi_old| clamp before exp
    log_prob_reduce: Literal["mean", "sum"] = "mean"  # over a step's executed chunk elements
    clip: float = 0.05  # PPO clip range (replaces the update config's)
    deterministic_eval: bool = True  # deploy the wrapped sampler (True) or the noise-injected chain PPO trained
    deploy_std_scale: float = 1.0  # deterministic_eval = false: the deployed chain's injected std times this
    # the noise network's learning rate as a multiple of the actor's: at 1 the learned std of push_puck's chains
    # barely moves in 200 iterations (0.050 -> 0.054); at 10 it rose (0.060 at 80), success no better
    noise_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        check_params(self, [("steps", self.steps >= 0, ">= 0"), ("max_log_ratio", self.max_log_ratio > 0, "> 0"),
                            ("log_prob_reduce", self.log_prob_reduce in ("mean", "sum"), "'mean' or 'sum'"),
                            ("clip", self.clip > 0, "> 0"), ("noise_lr_scale", self.noise_lr_scale > 0, "> 0"),
                            ("deploy_std_scale", self.deploy_std_scale >= 0 and
                             (self.deploy_std_scale == 1 or not self.deterministic_eval),
                             ">= 0, and 1 unless deterministic_eval = false (it scales the deployed chain's noise)")])


class ReinFlow(Algorithm):
    name = "reinflow"
    Params = ReinFlowParams
    params: ReinFlowParams

    def _settings(self, pretrained_steps: int) -> dict:
        p = self.params
        return {"steps": p.steps or pretrained_steps, "std_floor": p.std_floor, "std_ceiling": p.std_ceiling,
                "std_init": p.std_init, "noise_hidden": p.noise_hidden}

    def prepare_policy(self, policy: Policy) -> Policy:
        """Wrap the pretrained head (its weights carried over, the noise network new); a checkpoint of this
        algorithm (resume) is kept as it is."""
        head_config = policy.config.head
        if head_config.name != NoiseInjectedHead.name:
            if not callable(getattr(policy.head, "sampler_transition", None)):
                raise ConfigError(f"algo: reinflow fine-tunes heads with a few-step sampler (flow, consistency, "
                                  f"diffusion, energy_diffusion); the checkpoint's head is {head_config.name!r} "
                                  f"(fpo for energy)")
            settings = self._settings(policy.head.default_chain_steps())
            config = dataclasses.replace(policy.config, head=NoiseInjectedHead.wrap(head_config, **settings))
            wrapped = Policy(config).to(policy.device)
            state = {(f"head.base.{k[5:]}" if k.startswith("head.") else k): v for k, v in policy.state_dict().items()}
            missing, unexpected = wrapped.load_state_dict(state, strict=False)
            if unexpected or any(not k.startswith("head.noise.") for k in missing):
                raise ConfigError(f"checkpoint: its weights do not fit the noise-injected policy (missing "
                                  f"{missing[:3]}, unexpected {unexpected[:3]})")
            policy = wrapped
        deployment = {"deterministic": self.params.deterministic_eval, "deploy_std_scale": self.params.deploy_std_scale}
        for key, value in deployment.items():  # on resume too: how to deploy
            setattr(policy.head.params, key, value)
            policy.config.head.params[key] = value
        policy.requires_grad_(False)
        policy.head.requires_grad_(True)
        return policy

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.policy.head.parameters() if p.requires_grad]

    def param_groups(self) -> list[dict]:
        """One group, or two where the noise network learns at `noise_lr_scale` times the actor's rate (one
        group at scale 1 keeps the optimizer state of earlier runs loadable on resume)."""
        if self.params.noise_lr_scale == 1:
            return super().param_groups()
        noise = list(self.policy.head.noise.parameters())
        noise_ids = {id(p) for p in noise}
        rest = [p for p in self.parameters() if id(p) not in noise_ids]
        return [{"params": rest}, {"params": noise, "lr_scale": self.params.noise_lr_scale}]

    def _log_prob(self, cond: torch.Tensor, chain: Chain) -> torch.Tensor:
        """(B,) the chain's log-probability: per step over the executed elements, summed over steps."""
        x_next, mean, std = self.policy.head.chain_transitions(cond, chain)
        density = gaussian_log_density(x_next, mean, std)[:, : self.context.n_action_steps].flatten(1)
        per_step = density.mean(-1) if self.params.log_prob_reduce == "mean" else density.sum(-1)
        return per_step.view(chain.log_probs.shape).sum(1)

    def act(self, cond: torch.Tensor) -> Decision:
        head: NoiseInjectedHead = self.policy.head  # type: ignore[assignment]
        chain = head.sample_chain(cond)
        with torch.no_grad():
            log_prob = self._log_prob(cond, chain)
            k = torch.arange(head.params.steps, device=cond.device).repeat(cond.shape[0])
            # the learned std, averaged over steps and chunk elements
            self._chain_std = float(head.noise(cond.repeat_interleave(head.params.steps, 0), k).mean())
        return Decision(self.policy.unnormalize_action(chain.actions), {"latents": chain.latents,
                                                                         "log_prob": log_prob})

    def log_ratio(self, batch: Minibatch) -> torch.Tensor:
        old = batch.store["log_prob"]
        latents = batch.store["latents"]
        chain = Chain(latents, old.new_zeros(latents.shape[0], latents.shape[1] - 1))
        m = self.params.max_log_ratio
        return (self._log_prob(batch.cond, chain) - old).clamp(-m, m)

    def clip_range(self, unit: torch.Tensor, default: float) -> torch.Tensor:
        return torch.full(unit.shape, self.params.clip, device=unit.device)

    def rollout_stats(self, store: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"chain_std": getattr(self, "_chain_std", float("nan")),
                "chain_log_prob": float(store["log_prob"].mean())}
