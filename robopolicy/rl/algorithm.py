"""The plug-in interface every fine-tuning algorithm implements, and the registry `--algo` reads.

The shared machinery is the same for every algorithm: the collector runs the vector envs chunk by chunk,
GAE turns chunk-level rewards into advantages, a critic on the encoder's features gives values, and one PPO
update (minibatches, epochs, clipping, target-KL stop, critic warm-up) optimizes. An algorithm says only:

1. what it stores per decision at rollout time (`act` -> `Decision.store`): DPPO the fine-tuned part of the
   denoising chain, FPO its (noise, t) samples and their flow-matching losses, Gaussian PPO the sampled chunk
   and its log-probability;
2. how many update *units* one decision holds (`units_per_decision`): DPPO's (decision, denoising step) pairs,
   one for the others; the update shuffles and minibatches units, not decisions;
3. for a minibatch of units: the log-ratio log pi_new - log pi_old (`log_ratio`, with gradient; exactly 0
   before the first update up to float rounding), the clip range per unit (`clip_range`: DPPO's grows over
   denoising steps), advantage weights (`advantage_weight`: DPPO's denoising discount) and any extra loss
   (`extra_loss`: BC regularization toward the pretrained policy, an entropy bonus), and, where the ratio is
   only a surrogate, how far its actions have moved (`action_drift`, bounded by `max_action_drift`);
4. which parameters it trains (`parameters`, and `param_groups` where some learn at a multiple of the actor
   learning rate; the critic has its own optimizer in the runner);
5. how the result is deployed (`policy`): a `Policy` whose `predict_action`, `compile` and AOT run the
   fine-tuned sampler; it is what checkpoints hold, so `robopolicy eval` and `Policy.load` read them unchanged.

Algorithms are registered by name in `robopolicy.rl.registry.ALGORITHMS` (module path + one-line summary,
imported on first use, so `robopolicy finetune --help` lists them without importing torch). Adding one = one
module + one line there.
This interface is kept stable: extend it with defaulted methods, never change existing signatures.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from robopolicy.rl import registry
from robopolicy.specs import ConfigError, from_dict

if TYPE_CHECKING:
    from robopolicy.policy import Policy
    from robopolicy.sim.task import TaskSpec


@dataclass
class Decision:
    """What `act` returns for a batch of B observations."""

    actions: torch.Tensor  # (B, horizon, action_dim) unnormalized chunk; its first n_action_steps are executed
    store: dict[str, torch.Tensor]  # per-decision tensors (leading dim B) the update needs, e.g. the chain


@dataclass
class Minibatch:
    """M update units, each a (decision, unit index) pair, with the decision's data gathered per unit."""

    cond: torch.Tensor  # (M, C) the decision's conditioning (frozen encoder features)
    store: dict[str, torch.Tensor]  # Decision.store rows of each unit's decision
    unit: torch.Tensor  # (M,) long: the unit's index within its decision, in [0, units_per_decision)
    advantages: torch.Tensor  # (M,) the decision's normalized advantage (before `advantage_weight`)


@dataclass
class AlgorithmContext:
    """What the runner tells an algorithm about the run besides its own params."""

    n_action_steps: int  # actions executed per decision (the rest of the chunk is discarded)
    device: torch.device


class Algorithm(ABC):
    """Base class; subclasses set `name` and `Params` (a validated dataclass) and implement the abstract methods.

    `policy` is either a pretrained checkpoint's policy (the algorithm converts it for fine-tuning in
    `prepare_policy`, e.g. DPPO adds the trainable copy of the last K' denoising steps) or one this algorithm's
    own earlier checkpoint holds (resume), which `prepare_policy` must accept unchanged.
    """

    name: ClassVar[str]
    Params: ClassVar[type]

    def __init__(self, policy: Policy, params: dict[str, Any], context: AlgorithmContext) -> None:
        self.params = from_dict(self.Params, params, "algo.params")
        self.context = context
        self.policy = self.prepare_policy(policy)

    # ---- set-up -----------------------------------------------------------------------------------------------

    @abstractmethod
    def prepare_policy(self, policy: Policy) -> Policy:
        """The policy to fine-tune (and to deploy), built from `policy`; raise ConfigError if it cannot be."""

    @classmethod
    def scratch_policy(cls, task: TaskSpec, params: dict[str, Any]) -> Policy:
        """A freshly initialized policy for `task` (CHECKPOINT = "scratch"); only baselines support it."""
        raise ConfigError(f"algo: {cls.name} fine-tunes a pretrained checkpoint; 'scratch' is not supported")

    @abstractmethod
    def parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the actor optimizer trains (the frozen encoder and frozen chain steps are not)."""

    def param_groups(self) -> list[dict[str, Any]]:
        """The actor optimizer's parameter groups over `parameters()`; a group's "lr_scale" multiplies the actor
        learning rate (and its schedule) for that group. Default: one group."""
        return [{"params": self.parameters()}]

    # ---- rollout ----------------------------------------------------------------------------------------------

    @abstractmethod
    def act(self, cond: torch.Tensor) -> Decision:
        """Sample a decision (no gradient) from conditioning vectors (B, C), drawing from torch's global RNG."""

    @property
    def units_per_decision(self) -> int:
        return 1

    # ---- update -----------------------------------------------------------------------------------------------

    @abstractmethod
    def log_ratio(self, batch: Minibatch) -> torch.Tensor:
        """(M,) log pi_new(unit) - log pi_old(unit), differentiable in `parameters()`."""

    def clip_range(self, unit: torch.Tensor, default: float) -> torch.Tensor:
        """(M,) PPO clip range per unit; `default` is the update config's clip."""
        return torch.full(unit.shape, default, device=unit.device)

    def advantage_weight(self, unit: torch.Tensor) -> torch.Tensor:
        """(M,) factor applied to each unit's normalized advantage."""
        return torch.ones(unit.shape, device=unit.device)

    def extra_loss(self, batch: Minibatch) -> tuple[torch.Tensor, dict[str, float]]:
        """An extra differentiable loss term (added as is) and what to log about it."""
        return torch.zeros((), device=batch.cond.device), {}

    @property
    def max_action_drift(self) -> float | None:
        """The update stops once `action_drift` exceeds this; None (the default): no such bound."""
        return None

    def action_drift(self, cond: torch.Tensor, store: dict[str, torch.Tensor]) -> torch.Tensor:
        """(D,) RMS change, in normalized action units, of each decision's chunk had the current parameters
        acted on the rollout's own noise: 0 before the first update. Needed only with `max_action_drift`."""
        raise NotImplementedError(f"{self.name} keeps no action drift")

    def rollout_stats(self, store: dict[str, torch.Tensor]) -> dict[str, float]:
        """Per-iteration statistics of the stored decisions (e.g. chain std), logged as they are named."""
        return {}


def algorithm_class(name: str) -> type[Algorithm]:
    """The class registered as `name` in `robopolicy.rl.registry.ALGORITHMS` (imported on first use)."""
    return registry.algorithm_class(name)


def build_algorithm(name: str, policy: Policy, params: dict[str, Any], context: AlgorithmContext) -> Algorithm:
    return algorithm_class(name)(policy, params, context)
