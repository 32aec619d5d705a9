"""The PPO update every algorithm shares: minibatches of update units over several epochs, the clipped
surrogate with per-unit clip ranges and advantage weights (or FPO++'s asymmetric trust region: `surrogate_loss`),
a value loss, gradient clipping, and a target-KL stop that ends the whole update (not just the epoch) once the
approximate KL of a minibatch exceeds it, or once the actions of a fixed probe of the batch's decisions, taken
again from their rollout noise, have moved further than the algorithm's `max_action_drift` (FPO's ratio is a
surrogate that can stay near 1 while the actions move); `kl_stopped` logs either stop. A step whose gradient is
not finite is skipped (and counted in `skipped_steps`): applied, one NaN would turn every weight into NaN and every
later rollout into a failure.

Units are (decision, unit index) pairs (`Algorithm.units_per_decision` per decision: DPPO's denoising steps),
shuffled across the whole batch, so a minibatch mixes decisions and steps as DPPO's does.

Under torchrun each rank holds its own decisions (the same number on every rank) and takes
`minibatch_size / world_size` units of them per minibatch; gradients are averaged over the ranks before
clipping, so every step is one over the global minibatch and the ranks' parameters stay identical. The
target-KL stop reads the mean KL over the ranks, and the statistics returned are over all ranks.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn

from robopolicy.rl.algorithm import Algorithm, Minibatch
from robopolicy.rl.config import UpdateConfig
from robopolicy.train import distributed
from robopolicy.train.distributed import SINGLE_PROCESS, Dist

DRIFT_PROBE = 256  # decisions (per rank) whose action drift bounds the update


@dataclass
class Batch:
    """Flattened decisions of one iteration, ready for the update."""

    cond: torch.Tensor  # (D, C)
    store: dict[str, torch.Tensor]  # (D, ...)
    advantages: torch.Tensor  # (D,) normalized
    returns: torch.Tensor  # (D,)
    values: torch.Tensor  # (D,) the critic's values at collection time


def explained_variance(values: torch.Tensor, returns: torch.Tensor, info: Dist = SINGLE_PROCESS) -> float:
    """1 - Var(returns - values) / Var(returns) over all ranks' decisions: 1 for a perfect critic, <= 0 for one
    no better than a constant."""
    var = distributed.moments_across_ranks(returns, info)[1]
    return float("nan") if var == 0 else float(1 - distributed.moments_across_ranks(returns - values, info)[1] / var)


def surrogate_loss(ratio: torch.Tensor, adv: torch.Tensor, clip: torch.Tensor, trust_region: str) -> torch.Tensor:
    """(M,) per-unit policy loss (to minimize): PPO's clipped surrogate, or under "aspo" SPO's
    -r A + |A| (r - 1)^2 / (2 clip) for the units with a negative advantage (its minimum lies at r = 1 - clip)."""
    clipped = torch.max(-adv * ratio, -adv * torch.minimum(torch.maximum(ratio, 1 - clip), 1 + clip))
    if trust_region == "clip":
        return clipped
    spo = -adv * ratio + adv.abs() * (ratio - 1).pow(2) / (2 * clip)
    return torch.where(adv < 0, spo, clipped)


def mean_action_drift(algorithm: Algorithm, batch: Batch, probe: torch.Tensor, info: Dist) -> float:
    """The mean over the ranks' probe decisions of `Algorithm.action_drift`."""
    with torch.no_grad():
        drift = algorithm.action_drift(batch.cond[probe], {k: v[probe] for k, v in batch.store.items()})
    return distributed.mean_across_ranks(float(drift.mean()), info, probe.device)


def ppo_update(algorithm: Algorithm, critic: nn.Module, batch: Batch, actor_opt: torch.optim.Optimizer | None,
               critic_opt: torch.optim.Optimizer, cfg: UpdateConfig, info: Dist = SINGLE_PROCESS) -> dict[str, float]:
    """Run the update in place and return its statistics. `actor_opt=None` trains the critic only (warm-up).
    `info`: the process group (a single process by default); `cfg.minibatch_size` is the global minibatch."""
    n_decisions, units = batch.advantages.shape[0], algorithm.units_per_decision
    device = batch.advantages.device
    actor_params = algorithm.parameters()
    sums: dict[str, float] = defaultdict(float)
    ratio_max, n_minibatches, skipped, stopped = 0.0, 0, 0, False
    drift_limit = algorithm.max_action_drift if actor_opt is not None else None
    probe = torch.linspace(0, n_decisions - 1, min(n_decisions, DRIFT_PROBE), device=device).long()
    for _ in range(cfg.epochs):
        for idx in torch.randperm(n_decisions * units, device=device).split(cfg.minibatch_size // info.world_size):
            if (drift_limit is not None and n_minibatches > 0
                    and mean_action_drift(algorithm, batch, probe, info) > drift_limit):
                stopped = True  # the steps so far moved the rollout's actions as far as allowed
                break
            dec, unit = idx // units, idx % units
            cond = batch.cond[dec]
            value_loss = 0.5 * (critic(cond) - batch.returns[dec]).pow(2).mean()
            loss = cfg.value_coef * value_loss
            if actor_opt is not None:
                mb = Minibatch(cond, {k: v[dec] for k, v in batch.store.items()}, unit, batch.advantages[dec])
                log_ratio = algorithm.log_ratio(mb)
                ratio = log_ratio.exp()
                adv = mb.advantages * algorithm.advantage_weight(unit)
                clip = algorithm.clip_range(unit, cfg.clip)
                policy_loss = surrogate_loss(ratio, adv, clip, cfg.trust_region)
                extra, extra_stats = algorithm.extra_loss(mb)
                loss = loss + policy_loss.mean() + extra
                with torch.no_grad():
                    approx_kl = distributed.mean_across_ranks(float(((ratio - 1) - log_ratio).mean()), info, device)
                    if cfg.target_kl is not None and approx_kl > cfg.target_kl:
                        stopped = True  # this minibatch's step would leave the trust region: apply none of it
                        break
                    sums["approx_kl"] += approx_kl
                    sums["clip_fraction"] += float(((ratio - 1).abs() > clip).float().mean())
                    sums["ratio_mean"] += float(ratio.mean())
                    sums["policy_loss"] += float(policy_loss.mean())
                    ratio_max = max(ratio_max, float(ratio.max()))
                    for key, value in extra_stats.items():
                        sums[key] += value
            sums["value_loss"] += float(value_loss.detach())
            if actor_opt is not None:
                actor_opt.zero_grad(set_to_none=True)
            critic_opt.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_gradients([*actor_params, *critic.parameters()], info)
            norms = [float(nn.utils.clip_grad_norm_(critic.parameters(), cfg.max_grad_norm))]
            if actor_opt is not None:
                norms.append(float(nn.utils.clip_grad_norm_(actor_params, cfg.max_grad_norm)))
            n_minibatches += 1
            if not all(math.isfinite(norm) for norm in norms):  # the same on every rank: gradients are averaged
                skipped += 1
                continue
            critic_opt.step()
            if actor_opt is not None:
                sums["actor_grad_norm"] += norms[1]
                actor_opt.step()
        if stopped:
            break
    # every rank ran the same number of minibatches: the mean of the ranks' means is the global mean
    keys = sorted(sums)
    totals = distributed.reduce_across_ranks([sums[k] for k in keys], info, device)
    stats = {k: v / info.world_size / max(n_minibatches, 1) for k, v in zip(keys, totals, strict=True)}
    if actor_opt is not None:
        stats.update(ratio_max=distributed.reduce_across_ranks([ratio_max], info, device, "max")[0],
                     kl_stopped=float(stopped))
        if drift_limit is not None:
            stats["action_drift"] = mean_action_drift(algorithm, batch, probe, info)
    stats.update(minibatches=n_minibatches, skipped_steps=skipped,
                 explained_variance=explained_variance(batch.values, batch.returns, info))
    return stats
