"""FPO (Flow Policy Optimization; McAllister et al. 2025, akanazawa/fpo) for the flow head, and its FPO++ form.

A flow policy has no tractable likelihood, but its conditional flow-matching (CFM) loss on an action bounds the
action's log-likelihood from below (up to a constant), so exp(L_old - L_new) stands in for the PPO ratio
pi_new / pi_old. At rollout time each decision stores N (noise, t) pairs (default 8) and their CFM losses under
the rollout parameters; the update recomputes the same pairs' losses under the current parameters:

- `ratio = "mean"` (FPO): one ratio per decision, exp(mean_n L_old - mean_n L_new);
- `ratio = "per_sample"` (FPO++, Yi, Choi et al.): one ratio, and one PPO clip, per (decision, sample) unit.

Guards: the loss difference is clamped to +-`max_log_ratio` before the exponential; the stored pairs are
reused exactly, so the ratio is 1 before the first update. Rollouts may use any integrator and step count
(`steps`, which the deployed policy then integrates with too; the ratio never looks at the sampler, only at the
action), and the deployed policy integrates from zero noise (`eval_zero_noise`, FPO++'s deterministic
evaluation; the head's `initial_noise_scale` = 0).
The CFM losses average over the executed part of a chunk only: the rest never reached the environment, so
its advantage says nothing about it (`executed_only`); `loss_reduce = "sum"` takes FPO's squared norm instead
of the mean, so the same clip range is a trust region as many times tighter as the chunk has elements. The
energy head runs the same algorithm on its own training loss (`robopolicy.rl.energy_surrogate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch

from robopolicy.heads.base import randn
from robopolicy.heads.flow import FlowHead
from robopolicy.rl.algorithm import Algorithm, Decision, Minibatch
from robopolicy.rl.scratch import scratch_policy
from robopolicy.specs import ConfigError, HeadConfig, from_dict

if TYPE_CHECKING:
    from robopolicy.policy import Policy


@dataclass
class FPOParams:
    n_samples: int = 8  # (noise, t) pairs per decision
    ratio: Literal["per_sample", "mean"] = "per_sample"
    max_log_ratio: float = 5.0  # |L_old - L_new| clamp before exp
    # integration steps of rollouts and of the deployed policy (0: the head's inference_steps). push_puck: the
    # 4-step BC flow fine-tuned with 4 scored 76 % on 200 test seeds, the same weights integrated with 8 or 16: 81.5 %
    steps: int = 0
    eval_zero_noise: bool = True  # deployed flow policy integrates from x_0 = 0
    executed_only: bool = True  # CFM losses over the executed n_action_steps only (False: the whole chunk)
    t_max: float = 0.999  # pairs draw t ~ U[0, t_max]: the target at t = 1 is trivial
    # a pair's loss over the chunk elements: "mean" (the BC loss's scale), or "sum", FPO's squared norm, under
    # which the clip bounds each pair's change 1 / (elements) as far as under the mean (flow head only)
    loss_reduce: Literal["mean", "sum"] = "mean"
    # stop an iteration's update once the chunks of the batch's decisions, integrated again from their rollout
    # noise, have moved this far (RMS, normalized action units; None: no bound; flow head only): the
    # surrogate ratio can stay within the clip while the flow field between the stored pairs moves
    max_action_drift: float | None = None
    n_negatives: int = 64  # energy head only: stored counter-examples of its likelihood estimate
    # CHECKPOINT = "scratch" (FPO's own setting, against Gaussian PPO from scratch): a fresh flow head on an MLP
    hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    stats_episodes: int = 4  # random-action episodes for the scratch policy's observation statistics

    def __post_init__(self) -> None:
        checks = [("n_samples", self.n_samples >= 1, ">= 1"), ("max_log_ratio", self.max_log_ratio > 0, "> 0"),
                  ("steps", self.steps >= 0, ">= 0"), ("t_max", 0 < self.t_max <= 1, "in (0, 1]"),
                  ("n_negatives", self.n_negatives >= 1, ">= 1"),
                  ("max_action_drift", self.max_action_drift is None or self.max_action_drift > 0, "> 0 or absent"),
                  ("ratio", self.ratio in ("per_sample", "mean"), "'per_sample' or 'mean'"),
                  ("loss_reduce", self.loss_reduce in ("mean", "sum"), "'mean' or 'sum'")]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"algo.params.{name}: expected {expected}, got {getattr(self, name)!r}")


class CFMSurrogate:
    """The flow head's side of FPO: rollout sampling and per-pair CFM losses over stored (noise, t) pairs."""

    def __init__(self, head: FlowHead, params: FPOParams, executed_steps: int) -> None:
        self.head, self.params, self.executed_steps = head, params, executed_steps
        self.n_samples = params.n_samples

    def act(self, cond: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(normalized chunks, stored pairs with their losses) for conditioning (B, C)."""
        head, p = self.head, self.params
        b, shape = cond.shape[0], head.chunk_shape
        x0 = randn((b, *shape), None, cond)
        actions = head.integrate(cond, x0, self.steps)
        store = {"action": actions, "x0": x0, "noise": randn((b, p.n_samples, *shape), None, cond),
                 "t": p.t_max * torch.rand((b, p.n_samples), device=cond.device)}
        store["loss_old"] = self.losses(cond, store)
        return actions, store

    @property
    def steps(self) -> int:
        return self.params.steps or self.head.params.inference_steps

    def action_drift(self, cond: torch.Tensor, store: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) RMS difference over the loss's chunk part between the stored chunks and those the current flow
        integrates from the same x_0."""
        diff = (self.head.integrate(cond, store["x0"], self.steps) - store["action"])[:, :self.executed_steps]
        return diff.pow(2).mean((1, 2)).sqrt()

    def losses(self, cond: torch.Tensor, store: dict[str, torch.Tensor],
               sample: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N) losses of all stored pairs, or (B, 1) of pair `sample` (B,) of each decision."""
        noise, t = store["noise"], store["t"]
        if sample is not None:
            rows = torch.arange(len(sample), device=sample.device)
            noise, t = noise[rows, sample].unsqueeze(1), t[rows, sample].unsqueeze(1)
        losses = self.head.cfm_losses(cond, store["action"], noise, t, self.executed_steps)
        if self.params.loss_reduce == "sum":
            losses = losses * (self.executed_steps * self.head.chunk_shape[1])
        return losses


class FPO(Algorithm):
    name = "fpo"
    Params = FPOParams
    params: FPOParams

    @classmethod
    def scratch_policy(cls, task, params: dict) -> Policy:
        p = from_dict(FPOParams, params, "algo.params")
        return scratch_policy(task, HeadConfig("flow", {}), p.hidden_dims, p.stats_episodes, "min_max",
                              task.horizons.horizon)

    def prepare_policy(self, policy: Policy) -> Policy:
        head = policy.head
        executed = self.context.n_action_steps if self.params.executed_only else head.chunk_shape[0]
        if isinstance(head, FlowHead):
            self.surrogate: CFMSurrogate = CFMSurrogate(head, self.params, executed)
            deployed = {"initial_noise_scale": 0.0} if self.params.eval_zero_noise else {}
            deployed |= {"inference_steps": self.params.steps} if self.params.steps else {}
            for key, value in deployed.items():
                setattr(head.params, key, value)
                policy.config.head.params[key] = value
        elif head.name == "energy" and self.params.loss_reduce == "sum":
            raise ConfigError("algo.params.loss_reduce: 'sum' applies to the flow head's CFM losses; the energy "
                              "head's surrogate takes 'mean'")
        elif head.name == "energy" and self.params.max_action_drift is not None:
            raise ConfigError("algo.params.max_action_drift: applies to the flow head (its chunks are a function "
                              "of their noise); the energy head's Langevin chain keeps none: leave it absent")
        elif head.name == "energy":
            from robopolicy.rl.energy_surrogate import EnergySurrogate

            self.surrogate = EnergySurrogate(head, self.params, executed)  # type: ignore[assignment,arg-type]
        else:
            raise ConfigError(f"algo: fpo fine-tunes the flow or energy head; the checkpoint's head is "
                              f"{head.name!r} (use dppo for diffusion and energy_diffusion, reinflow for consistency)")
        policy.encoder.requires_grad_(False)
        return policy

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.policy.head.parameters() if p.requires_grad]

    @property
    def max_action_drift(self) -> float | None:
        return self.params.max_action_drift

    def action_drift(self, cond: torch.Tensor, store: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.surrogate.action_drift(cond, store)  # the flow head's: prepare_policy refuses it otherwise

    @property
    def per_sample(self) -> bool:
        return self.params.ratio == "per_sample" and self.surrogate.n_samples > 1

    @property
    def units_per_decision(self) -> int:
        return self.surrogate.n_samples if self.per_sample else 1

    def act(self, cond: torch.Tensor) -> Decision:
        with torch.no_grad():
            actions, store = self.surrogate.act(cond)
        return Decision(self.policy.unnormalize_action(actions), store)

    def log_ratio(self, batch: Minibatch) -> torch.Tensor:
        if self.per_sample:
            new = self.surrogate.losses(batch.cond, batch.store, batch.unit)[:, 0]
            old = batch.store["loss_old"].gather(1, batch.unit[:, None])[:, 0]
        else:
            new = self.surrogate.losses(batch.cond, batch.store).mean(1)
            old = batch.store["loss_old"].mean(1)
        return (old - new).clamp(-self.params.max_log_ratio, self.params.max_log_ratio)

    def rollout_stats(self, store: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"fpo_loss_old": float(store["loss_old"].mean())}
