"""Energy-based head: a scalar energy E_theta(action chunk, cond); actions are found by minimizing it.

Two variants share the network (the chunk-shaped backbone read out to one scalar):
- `ibc` (Implicit BC, Florence et al. 2021): InfoNCE that ranks the demonstrated chunk above uniform
  counter-examples in [-1, 1]; inference by derivative-free optimization or Langevin dynamics. A learned energy
  can have several minima, which is what lets it represent multimodal demonstrations.
- `ebt` (energy-based transformer style, Gladstone et al. 2025): a few unrolled gradient-descent steps on E from
  a random start are trained to land on the demonstration; inference repeats the descent and the final energy is
  an uncertainty score. Pure regression of the end point is mean-seeking, so an optional InfoNCE term
  (`contrastive_weight`) keeps the energy multimodal.
The RL chain is Langevin-style: x_{k+1} ~ N(x_k - eta * grad_x E(x_k), max(noise_k, min_std)^2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from robopolicy.heads.base import Head, check_params, randn, uniform

GRADIENT_PENALTY_BATCH = 16  # samples whose counter-examples the gradient penalty looks at (a double backward)


@dataclass
class EnergyParams:
    variant: Literal["ibc", "ebt"] = "ibc"
    inference: Literal["dfo", "langevin", "descent"] = "langevin"
    num_counter_examples: int = 32
    # > 0: counter-examples are Langevin samples of the current model (IBC's MCMC negatives). On the toy task
    # (600 updates) 10 steps moved Langevin samples from the box edge (|chunk mean| 1.20) onto the data (1.03;
    # data 1.00) at ~7x the training cost; 5 steps and 400 updates were not enough (1.20)
    negative_langevin_steps: int = 0
    # > 0: this many of the counter-examples are the demonstration plus Gaussian noise, the std cycling through
    # `local_negative_stds` (the rest stay uniform). Uniform counter-examples in a 16 x 2 chunk box are separable
    # by a crude energy (push_puck's IBC InfoNCE fell to ~1e-5 at 0 % success); near ones shape the minimum itself
    local_negatives: int = 0
    local_negative_stds: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)
    # > 0: a gradient penalty, weight * mean(max(0, |grad_x E| - gradient_margin)^2), at random points between
    # the demonstration and its counter-examples (WGAN-GP's interpolates; the batch's first GRADIENT_PENALTY_BATCH
    # samples). Unpenalized InfoNCE grows a narrow well on the data in a flat plateau (push_puck: E = -21 on a
    # demonstration, +17 at 0.05 noise, +41 uniform) that Langevin dynamics from a uniform start never finds;
    # penalized at the counter-examples alone (IBC's place for it) the well stays as steep. A bounded slope on
    # the way to the data keeps the basin wide enough to descend into
    gradient_penalty: float = 0.0
    gradient_margin: float = 1.0
    dfo_samples: int = 256
    dfo_iters: int = 3
    dfo_noise: float = 0.33
    dfo_shrink: float = 0.5
    langevin_steps: int = 50
    langevin_step_size: float = 0.03
    langevin_noise_start: float = 0.1
    langevin_noise_end: float = 0.01
    descent_steps: int = 5
    descent_step_size: float = 0.1
    contrastive_weight: float = 0.0
    min_std: float = 0.1

    def __post_init__(self) -> None:
        checks = [
            ("num_counter_examples", self.num_counter_examples >= 1, ">= 1"),
            ("negative_langevin_steps", self.negative_langevin_steps >= 0, ">= 0"),
            ("local_negatives", 0 <= self.local_negatives <= self.num_counter_examples,
             f"in [0, num_counter_examples = {self.num_counter_examples}]"),
            ("local_negative_stds", len(self.local_negative_stds) > 0 and min(self.local_negative_stds) > 0,
             "a non-empty list of stds > 0"),
            ("gradient_penalty", self.gradient_penalty >= 0, ">= 0"),
            ("gradient_margin", self.gradient_margin >= 0, ">= 0"),
            ("dfo_samples", self.dfo_samples >= 1, ">= 1"),
            ("dfo_iters", self.dfo_iters >= 1, ">= 1"),
            ("dfo_noise", self.dfo_noise >= 0, ">= 0"),
            ("dfo_shrink", 0 < self.dfo_shrink <= 1, "in (0, 1]"),
            ("langevin_steps", self.langevin_steps >= 1, ">= 1"),
            ("langevin_step_size", self.langevin_step_size > 0, "> 0"),
            ("langevin_noise_start", self.langevin_noise_start >= 0, ">= 0"),
            ("langevin_noise_end", self.langevin_noise_end >= 0, ">= 0"),
            ("descent_steps", self.descent_steps >= 1, ">= 1"),
            ("descent_step_size", self.descent_step_size > 0, "> 0"),
            ("contrastive_weight", self.contrastive_weight >= 0, ">= 0"),
            ("min_std", self.min_std > 0, "> 0"),
        ]
        check_params(self, checks)


class EnergyHead(Head):
    name = "energy"
    Params = EnergyParams
    params: EnergyParams
    samples_with_autograd = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.readout = nn.Linear(self.horizon * self.action_dim, 1)

    def energy(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """E_theta(x, cond) per sample: (B, T, D), (B, C) -> (B,). Lower is more likely."""
        return self.readout(self.net(x, 0.0, cond).flatten(1)).squeeze(-1)

    def energy_grad(self, x: torch.Tensor, cond: torch.Tensor, create_graph: bool) -> torch.Tensor:
        """grad_x E; works under no_grad callers. create_graph keeps the result differentiable w.r.t. theta."""
        with torch.enable_grad():
            x = x if x.requires_grad else x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.energy(x, cond).sum(), x, create_graph=create_graph)
        return grad

    # ---- training -------------------------------------------------------------------------------------------

    def _info_nce(self, cond: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of picking the demonstration among itself and counter-examples by softmax(-E).

        Counter-examples start uniform in the action box; with `negative_langevin_steps` > 0 they then follow
        the current model's Langevin dynamics (IBC's MCMC counter-examples), so they land where the model puts
        its minima and push the energy up wherever those minima are not on the data. The last
        `local_negatives` of them are the demonstration perturbed at several scales instead, so the energy also
        has to rise in every direction around the data, which is what gradient-based inference descends.
        """
        p = self.params
        b, n = actions.shape[0], p.num_counter_examples
        negatives = uniform((b, n, *self.chunk_shape), None, actions)
        if p.local_negatives > 0:
            stds = torch.tensor(p.local_negative_stds, dtype=actions.dtype, device=actions.device)
            stds = stds[torch.arange(p.local_negatives, device=actions.device) % len(stds)].view(1, -1, 1, 1)
            near = actions.unsqueeze(1) + stds * randn((b, p.local_negatives, *self.chunk_shape), None, actions)
            negatives[:, n - p.local_negatives:] = near.clamp(-1, 1)
        if p.negative_langevin_steps > 0:
            cond_rep = cond.detach().repeat_interleave(n, 0)
            flat = negatives.flatten(0, 1)
            for k in range(p.negative_langevin_steps):
                flat = self._langevin_step(flat, cond_rep, k, p.negative_langevin_steps, None)
            negatives = flat.view_as(negatives)  # input gradients only: no graph back to the parameters
        candidates = torch.cat([actions.unsqueeze(1), negatives], 1).flatten(0, 1)
        logits = -self.energy(candidates, cond.repeat_interleave(n + 1, 0)).view(b, n + 1)
        loss = F.cross_entropy(logits, torch.zeros(b, dtype=torch.long, device=actions.device))
        if p.gradient_penalty > 0:
            k = GRADIENT_PENALTY_BATCH
            loss = loss + p.gradient_penalty * self._gradient_penalty(actions[:k], negatives[:k], cond[:k])
        return loss

    def _gradient_penalty(self, actions: torch.Tensor, negatives: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """mean(max(0, |grad_x E| - margin)^2) at a random point on each segment from a demonstration (B, T, D)
        to one of its counter-examples (B, N, T, D); differentiable w.r.t. theta."""
        b, n = negatives.shape[:2]
        u = torch.rand((b, n, 1, 1), device=actions.device, dtype=actions.dtype)
        between = (actions.unsqueeze(1) + u * (negatives - actions.unsqueeze(1))).flatten(0, 1)
        grad = self.energy_grad(between, cond.repeat_interleave(n, 0), create_graph=True)
        return (grad.flatten(1).norm(dim=1) - self.params.gradient_margin).clamp(min=0).pow(2).mean()

    def _descend(self, x: torch.Tensor, cond: torch.Tensor, steps: int, create_graph: bool) -> torch.Tensor:
        for _ in range(steps):
            x = torch.add(x, self.energy_grad(x, cond, create_graph), alpha=-self.params.descent_step_size)
        return x

    def loss(self, cond: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        p = self.params
        if p.variant == "ibc":
            return self._info_nce(cond, actions)
        start = uniform(tuple(actions.shape), None, actions)
        final = self._descend(start, cond, p.descent_steps, create_graph=True)
        loss = F.mse_loss(final, actions)
        if p.contrastive_weight > 0:
            loss = loss + p.contrastive_weight * self._info_nce(cond, actions)
        return loss

    # ---- inference ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _dfo(self, cond: torch.Tensor, iters: int, generator: torch.Generator | None) -> torch.Tensor:
        """IBC's derivative-free optimizer: resample by softmax(-E), perturb with shrinking noise, return argmin."""
        p = self.params
        b, n = cond.shape[0], p.dfo_samples
        cond_rep = cond.repeat_interleave(n, 0)
        x = uniform((b, n, *self.chunk_shape), generator, cond)
        noise = p.dfo_noise
        for _ in range(iters):
            probs = torch.softmax(-self.energy(x.flatten(0, 1), cond_rep).view(b, n), -1)
            idx = torch.multinomial(probs, n, replacement=True, generator=generator)
            x = torch.gather(x, 1, idx.view(b, n, 1, 1).expand_as(x))
            x = (x + noise * randn(tuple(x.shape), generator, x)).clamp(-1, 1)
            noise *= p.dfo_shrink
        best = self.energy(x.flatten(0, 1), cond_rep).view(b, n).argmin(-1)
        return x[torch.arange(b, device=x.device), best]

    def resolve_steps(self, steps: int | None) -> int:
        """`steps` overrides dfo_iters, langevin_steps or descent_steps, whichever `inference` uses."""
        p = self.params
        return steps or {"dfo": p.dfo_iters, "langevin": p.langevin_steps, "descent": p.descent_steps}[p.inference]

    def sample(self, cond: torch.Tensor, steps: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Minimizes the energy; draws its noise as it goes (DFO resamples), so it is not `sample_from_noise`."""
        p, steps = self.params, self.resolve_steps(steps)
        if p.inference == "dfo":
            return self._dfo(cond, steps, generator)
        x = uniform((cond.shape[0], *self.chunk_shape), generator, cond)
        if p.inference == "descent":
            return self._descend(x, cond, steps, create_graph=False).detach()
        for k in range(steps):
            x = self._langevin_step(x, cond, k, steps, generator)
        return x.detach()

    def _langevin_step(self, x: torch.Tensor, cond: torch.Tensor, k: int, steps: int,
                       generator: torch.Generator | None) -> torch.Tensor:
        x = torch.add(x, self.energy_grad(x, cond, create_graph=False), alpha=-self.params.langevin_step_size)
        return torch.add(x, randn(tuple(x.shape), generator, x), alpha=float(self._noise(k, steps))).clamp_(-1, 1)

    def sample_with_energy(self, cond: torch.Tensor, steps: int | None = None,
                           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(actions, final energy (B,)); a high final energy flags an observation the model is unsure about."""
        actions = self.sample(cond, steps, generator)
        with torch.no_grad():
            return actions, self.energy(actions, cond)

    # ---- RL hooks ---------------------------------------------------------------------------------------------

    def _noise(self, k: torch.Tensor | int, steps: int) -> torch.Tensor | float:
        """Langevin noise at step k, annealed linearly from noise_start to noise_end; the EBT descent is noiseless."""
        p = self.params
        if p.variant == "ebt":
            return 0.0
        frac = k / max(steps - 1, 1)
        return p.langevin_noise_start + (p.langevin_noise_end - p.langevin_noise_start) * frac

    def default_chain_steps(self) -> int:
        return self.params.langevin_steps if self.params.variant == "ibc" else self.params.descent_steps

    def initial_latent(self, batch: int, cond: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return uniform((batch, *self.chunk_shape), generator, cond)

    def transition(self, cond: torch.Tensor, x: torch.Tensor, k: torch.Tensor | int,
                   steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.params
        eta = p.langevin_step_size if p.variant == "ibc" else p.descent_step_size
        mean = x - eta * self.energy_grad(x, cond, create_graph=torch.is_grad_enabled())
        k = torch.as_tensor(k, device=x.device, dtype=x.dtype).expand(x.shape[0])
        std = torch.as_tensor(self._noise(k, steps), device=x.device, dtype=x.dtype).expand(x.shape[0])
        return mean, std.clamp(min=p.min_std).view(-1, 1, 1).expand_as(mean)
