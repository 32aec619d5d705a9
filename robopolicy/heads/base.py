"""The one interface every policy head implements, and the RL hooks built on it.

Training: `loss(cond, actions)`. Inference: `sample(cond, steps, generator)`. RL fine-tuning (DPPO-style):
every head can also run a *stochastic chain* x_0 -> x_1 -> ... -> x_K = action with Gaussian transitions
p(x_{k+1} | x_k, cond) = N(mean_k, std_k^2), std_k >= min_std, so the chain is an inner MDP whose
per-step log-probabilities give a policy gradient. A head only defines `initial_latent` and `transition`;
the chain sampling and log-probability bookkeeping live here once.
All action tensors are normalized chunks of shape (B, horizon, action_dim).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from robopolicy.nn.activations import make_twice_differentiable
from robopolicy.nn.backbones import build_backbone
from robopolicy.specs import BackboneConfig, ConfigError, from_dict


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Element-wise log N(x; mean, std^2) (fine-tuning clamps and averages these per element, as DPPO does)."""
    return -((x - mean) ** 2) / (2 * std * std) - torch.log(std) - 0.5 * math.log(2 * math.pi)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, std^2) summed over all but the batch dimension."""
    return gaussian_log_density(x, mean, std).flatten(1).sum(-1)


def axpby(a: torch.Tensor | float, x: torch.Tensor, b: torch.Tensor | float, y: torch.Tensor) -> torch.Tensor:
    """a * x + b * y in two kernels; a and b are floats or broadcastable tensors.

    Sampling loops are chains of such updates; on small networks each extra element-wise kernel costs
    several percent of a network forward, so the step arithmetic is written with as few as possible.
    """
    ax = x * a
    return torch.add(ax, y, alpha=b) if isinstance(b, float) else torch.addcmul(ax, y, b)


def check_params(params: object, checks: list[tuple[str, bool, str]]) -> None:
    """Raise a ConfigError naming the first failing `head.params.<field>`; used by every head's Params."""
    for name, ok, expected in checks:
        if not ok:
            raise ConfigError(f"head.params.{name}: expected {expected}, got {getattr(params, name)!r}")


def _draw(fill, shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Random tensor on `like`'s device/dtype, drawn on the generator's device when one is given (reproducible).

    Filling an empty tensor in place is one kernel (`2 * rand - 1` would be three).
    """
    device = generator.device if generator is not None else like.device
    drawn = fill(torch.empty(shape, device=device, dtype=like.dtype), generator)
    return drawn if device == like.device else drawn.to(like.device)


def randn(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise on `like`'s device/dtype, drawn from `generator` when given (reproducible)."""
    return _draw(lambda t, g: t.normal_(generator=g), shape, generator, like)


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Uniform samples in [-1, 1] (the normalized action box), reproducible from `generator`."""
    return _draw(lambda t, g: t.uniform_(-1.0, 1.0, generator=g), shape, generator, like)


@dataclass
class Chain:
    """A sampled denoising chain. latents[:, k] is x_k; latents[:, -1] is the action chunk."""

    latents: torch.Tensor  # (B, K+1, T, D)
    log_probs: torch.Tensor  # (B, K)
    first_step: int = 0  # chain step of latents[:, 0]; > 0 when only the last (fine-tuned) steps are kept

    @property
    def actions(self) -> torch.Tensor:
        return self.latents[:, -1]

    @property
    def steps(self) -> int:
        return self.log_probs.shape[1]


class Head(nn.Module, ABC):
    """Base class; subclasses set `name`, `Params` (a validated dataclass) and implement the abstract methods."""

    name: ClassVar[str]
    Params: ClassVar[type]
    # constraint-aware sampling (robopolicy.hal.constrained_sampling): maps each intermediate normalized chunk onto
    # the constraint set; None (the default) costs one attribute test per step
    step_projection: Callable[[torch.Tensor], torch.Tensor] | None = None
    # True for heads that take input gradients while sampling (energy heads): torch.export cannot capture them,
    # and their training differentiates the backbone's backward pass, so it gets twice-differentiable activations
    samples_with_autograd: bool = False
    params: Any  # an instance of `Params`; subclasses narrow the annotation

    def __init__(self, params: dict[str, Any], action_dim: int, horizon: int, cond_dim: int,
                 backbone: BackboneConfig) -> None:
        super().__init__()
        self.params = from_dict(self.Params, params, "head.params")
        self.action_dim, self.horizon, self.cond_dim = action_dim, horizon, cond_dim
        # every head's network has the same (chunk, time, cond) -> chunk signature
        self.net = build_backbone(backbone, action_dim, horizon, cond_dim)
        if self.samples_with_autograd:
            make_twice_differentiable(self.net)

    @property
    def chunk_shape(self) -> tuple[int, int]:
        return (self.horizon, self.action_dim)

    def project_step(self, x: torch.Tensor) -> torch.Tensor:
        """The chunk after one sampling step, projected by `step_projection` when one is set (as Diffusion
        Predictive Control with Constraints projects every denoising step); unchanged otherwise."""
        return x if self.step_projection is None else self.step_projection(x)

    @abstractmethod
    def loss(self, cond: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Scalar training loss for normalized action chunks given conditioning vectors."""

    # ---- inference: all randomness is drawn up front, the rest is a pure function (compilable) ---------------

    def resolve_steps(self, steps: int | None) -> int:
        """The number of inference steps `sample` uses when given `steps` (None: the configured default)."""
        return steps or self.default_chain_steps()

    def prepare_sampling(self, steps: int) -> None:
        """Compute and cache the per-step-count constants of sampling (schedules, noise levels).

        `Policy.compile` calls this eagerly before each compiled call, so the graph reads them as constants
        instead of filling a cache while being traced (which would cost a graph break and a recompile).
        """

    def noise_shape(self, batch: int, steps: int) -> tuple[int, ...]:
        """Shape (B, slots, T, D) of the standard-normal noise one `sample` call consumes."""
        return (batch, 1, *self.chunk_shape)

    def latent_from_noise(self, noise: torch.Tensor) -> torch.Tensor:
        """The chain's x_0 (`initial_latent`) from standard-normal noise (B, T, D): the identity unless the
        head starts at another scale, so a stochastic chain can be deployed as a pure function of its noise."""
        return noise

    def sample_from_noise(self, cond: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
        """Deterministic sampling given all its noise; `Policy.compile` compiles this whole loop into one graph."""
        raise NotImplementedError(f"the {self.name} head draws its noise while sampling; use sample()")

    @property
    def samples_from_noise(self) -> bool:
        """False for heads that override `sample` instead (they draw noise as they go)."""
        return type(self).sample_from_noise is not Head.sample_from_noise

    def sample(self, cond: torch.Tensor, steps: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalized action chunks (B, T, D); `steps` overrides the configured number of inference steps."""
        steps = self.resolve_steps(steps)
        return self.sample_from_noise(cond, randn(self.noise_shape(cond.shape[0], steps), generator, cond), steps)

    # ---- RL hooks: stochastic chain with Gaussian transitions -------------------------------------------------

    @abstractmethod
    def initial_latent(self, batch: int, cond: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """x_0 of the chain (B, T, D)."""

    @abstractmethod
    def transition(self, cond: torch.Tensor, x: torch.Tensor, k: torch.Tensor | int,
                   steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of p(x_{k+1} | x_k = x); k may be a (B,) tensor of step indices; std is floored."""

    def default_chain_steps(self) -> int:
        return int(getattr(self.params, "inference_steps", 1))

    def sample_chain(self, cond: torch.Tensor, steps: int | None = None,
                     generator: torch.Generator | None = None) -> Chain:
        """Sample x_0..x_K and the per-step log-probabilities (no gradient; used during rollouts)."""
        steps = steps or self.default_chain_steps()
        with torch.no_grad():
            x = self.initial_latent(cond.shape[0], cond, generator)
            latents, log_probs = [x], []
            for k in range(steps):
                mean, std = self.transition(cond, x, k, steps)
                x = mean + std * randn(tuple(mean.shape), generator, mean)
                latents.append(x)
                log_probs.append(gaussian_log_prob(x, mean, std))
        return Chain(torch.stack(latents, 1), torch.stack(log_probs, 1))

    def chain_transitions(self, cond: torch.Tensor, chain: Chain,
                          step_idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_next, mean, std) of stored transitions under the current parameters (with gradient).

        Without `step_idx`: all K stored transitions of each of the B chains, flattened to (B*K, T, D), in one
        batched network call. With `step_idx` (M,): one transition per row, chain row i's step step_idx[i]
        (counted from `chain.first_step`), for minibatches of subsampled (decision, step) pairs; cond is (M, C).
        """
        total = chain.first_step + chain.steps
        if step_idx is None:
            b, k = chain.log_probs.shape
            x_prev, x_next = chain.latents[:, :-1].flatten(0, 1), chain.latents[:, 1:].flatten(0, 1)
            step_idx, cond = torch.arange(k, device=cond.device).repeat(b), cond.repeat_interleave(k, 0)
        else:
            rows = torch.arange(step_idx.shape[0], device=step_idx.device)
            x_prev, x_next = chain.latents[rows, step_idx], chain.latents[rows, step_idx + 1]
        mean, std = self.transition(cond, x_prev, step_idx + chain.first_step, total)
        return x_next, mean, std

    def chain_log_prob(self, cond: torch.Tensor, chain: Chain, step_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probabilities of a stored chain under the current parameters (with gradient): (B, K) for all
        steps, or (M,) for the (row, step_idx) pairs (see `chain_transitions`)."""
        x_next, mean, std = self.chain_transitions(cond, chain, step_idx)
        log_prob = gaussian_log_prob(x_next, mean, std)
        return log_prob if step_idx is not None else log_prob.reshape(chain.log_probs.shape)
