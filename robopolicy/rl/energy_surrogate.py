"""The energy head's fine-tuning: FPO's ratio exp(L_old - L_new) with L its own training loss's likelihood term.

Choice and why. The energy head's Langevin sampler could be fine-tuned as a chain (its transitions are Gaussian),
but (1) every transition's mean holds grad_x E, so the chain's log-probability needs second-order gradients
through all of its steps (50 by default) in every update; (2) a chain needs a std floor at every step (0.1),
which makes the sampled policy far noisier than the deployed sampler, whose noise anneals to 0.01, so the policy
fine-tuned would not be the policy deployed. The energy itself, however, *is* a density: p(a | s) is
proportional to exp(-E(a, s)), and the InfoNCE loss the head trains with estimates its normalizer from
counter-examples. So the likelihood ratio is available directly:

    log p_new(a) - log p_old(a) = -(E_new(a) - E_old(a)) - (log Z_new - log Z_old),
    log Z  ~  logmeanexp_j(-E(n_j))   over M counter-examples n_j stored at rollout time.

The stored counter-examples are uniform in the normalized action box over the executed part of the chunk and
copy the action's unexecuted tail, so the ratio compares only what reached the environment. The positive is
left out of the normalizer (InfoNCE keeps it): with it, the estimate saturates at 0 once the action's energy is
far below the counter-examples' and the policy gradient vanishes. Rollouts use the head's own sampler, the one
deployed, and each decision costs 1 + M energy evaluations, first-order only. Guards are FPO's: the difference
is clamped before exp, and the ratio is exactly 1 before the first update (same stored counter-examples).

The diffusion-trained energy head (`robopolicy.heads.energy_diffusion`) takes the chain route instead, with
`--algo dppo` or `--algo reinflow`: its sampler is a short annealed chain (5 DDIM steps, not 50 Langevin ones),
so the second-order gradients cover 3-5 steps, and both deploy the deterministic DDIM sampler the head deploys
anyway; both objections above fall away, and the log-probabilities are exact rather than estimated.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from robopolicy.heads.base import uniform
from robopolicy.heads.energy import EnergyHead

if TYPE_CHECKING:
    from robopolicy.rl.fpo import FPOParams


class EnergySurrogate:
    """The energy head's side of FPO: one likelihood estimate per decision (n_samples = 1)."""

    n_samples = 1

    def __init__(self, head: EnergyHead, params: FPOParams, executed_steps: int) -> None:
        self.head, self.params, self.executed_steps = head, params, executed_steps

    def act(self, cond: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(normalized chunks from the head's sampler, stored counter-examples and the old loss)."""
        actions = self.head.sample(cond)
        b, m = cond.shape[0], self.params.n_negatives
        negatives = actions.unsqueeze(1).repeat(1, m, 1, 1)
        n = self.executed_steps
        negatives[:, :, :n] = uniform((b, m, n, self.head.action_dim), None, cond)
        store = {"action": actions, "negatives": negatives}
        store["loss_old"] = self.losses(cond, store)
        return actions, store

    def losses(self, cond: torch.Tensor, store: dict[str, torch.Tensor],
               sample: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1) negative log-likelihood estimates E(a) + logmeanexp_j(-E(n_j))."""
        action, negatives = store["action"], store["negatives"]
        b, m = negatives.shape[:2]
        e_pos = self.head.energy(action, cond)
        e_neg = self.head.energy(negatives.flatten(0, 1), cond.repeat_interleave(m, 0)).view(b, m)
        return (e_pos + torch.logsumexp(-e_neg, 1) - math.log(m)).unsqueeze(1)
