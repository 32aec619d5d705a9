"""Flow-matching head: linear-path conditional flow matching, Euler or midpoint integration.

Convention: x_t = t * action + (1 - t) * noise, t in [0, 1]; the network predicts the velocity
action - noise. FPO needs per-sample CFM losses for given (noise, t) pairs: `cfm_losses`.
`initial_noise_scale` scales the ODE's starting noise when sampling: 0 integrates from x_0 = 0, the
deterministic zero-noise evaluation FPO++ uses for fine-tuned policies (rollouts keep scale 1 to explore).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from robopolicy.heads.base import Head, check_params, randn


@dataclass
class FlowParams:
    inference_steps: int = 10
    integrator: Literal["euler", "midpoint"] = "euler"
    time_sampling: Literal["uniform", "logit_normal", "beta"] = "uniform"
    logit_normal_mean: float = 0.0
    logit_normal_std: float = 1.0
    beta_alpha: float = 1.5
    beta_beta: float = 1.0
    time_scale: float = 100.0
    min_std: float = 0.1
    initial_noise_scale: float = 1.0

    def __post_init__(self) -> None:
        check_params(self, [("inference_steps", self.inference_steps >= 1, ">= 1"),
                            ("min_std", self.min_std > 0, "> 0"),
                            ("initial_noise_scale", self.initial_noise_scale >= 0, ">= 0")])


class FlowHead(Head):
    name = "flow"
    Params = FlowParams
    params: FlowParams

    def velocity(self, x: torch.Tensor, t: torch.Tensor | float, cond: torch.Tensor) -> torch.Tensor:
        """Predicted velocity at time t: a (B,) tensor, or one float for the whole batch (sampling)."""
        return self.net(x, t * self.params.time_scale, cond)

    def sample_time(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        p = self.params
        if p.time_sampling == "uniform":
            return torch.rand(shape, device=device)
        if p.time_sampling == "logit_normal":
            return torch.sigmoid(p.logit_normal_mean + p.logit_normal_std * torch.randn(shape, device=device))
        # pi0-style: emphasise noisy times (small t); cap away from t = 1 where the target is trivial
        beta = torch.distributions.Beta(torch.tensor(p.beta_alpha), torch.tensor(p.beta_beta))
        return 0.999 * (1 - beta.sample(shape).to(device))

    def cfm_losses(self, cond: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor,
                   t: torch.Tensor, first_steps: int | None = None) -> torch.Tensor:
        """Per-pair conditional flow-matching losses.

        cond (B, C), actions (B, T, D), noise (B, N, T, D), t (B, N) -> (B, N) mean squared velocity errors;
        `first_steps` averages over the chunk's first steps only (FPO: the executed part of a chunk).
        """
        b, n = t.shape
        a = actions.unsqueeze(1).expand_as(noise)
        tt = t.view(b, n, 1, 1)
        x_t = tt * a + (1 - tt) * noise
        pred = self.velocity(x_t.flatten(0, 1), t.flatten(), cond.repeat_interleave(n, 0))
        err = (pred.view_as(noise) - (a - noise)) ** 2
        return err[:, :, :first_steps].flatten(2).mean(-1)

    def loss(self, cond: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        noise = torch.randn_like(actions).unsqueeze(1)
        t = self.sample_time((actions.shape[0], 1), actions.device)
        return self.cfm_losses(cond, actions, noise, t).mean()

    def _step(self, x: torch.Tensor, t: torch.Tensor | float, dt: float, cond: torch.Tensor) -> torch.Tensor:
        v = self.velocity(x, t, cond)
        if self.params.integrator == "midpoint":
            v = self.velocity(torch.add(x, v, alpha=0.5 * dt), t + 0.5 * dt, cond)
        return torch.add(x, v, alpha=dt)

    def sample_from_noise(self, cond: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
        """Integrate the ODE from initial_noise_scale * noise[:, 0] at t = 0 to the action at t = 1."""
        scale = self.params.initial_noise_scale
        return self.integrate(cond, noise[:, 0] if scale == 1.0 else noise[:, 0] * scale, steps)

    def integrate(self, cond: torch.Tensor, x: torch.Tensor, steps: int) -> torch.Tensor:
        """The ODE's end point from x at t = 0 with `steps` steps of the configured integrator."""
        for k in range(steps):
            x = self.project_step(self._step(x, k / steps, 1.0 / steps, cond))
        return x

    # ---- RL hooks: ReinFlow-style Euler chain with Gaussian exploration noise -------------------------------

    def initial_latent(self, batch: int, cond: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return randn((batch, *self.chunk_shape), generator, cond)

    def transition(self, cond: torch.Tensor, x: torch.Tensor, k: torch.Tensor | int,
                   steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        mean, _ = self.sampler_transition(cond, x, k, steps)
        return mean, torch.full_like(mean, self.params.min_std)

    def sampler_transition(self, cond: torch.Tensor, x: torch.Tensor, k: torch.Tensor | int,
                           steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of the deterministic sampler's step k: one integrator step, std 0 (an ODE).

        Noise-injected fine-tuning (`robopolicy.rl.noise_injection`) adds its learned std to this one.
        """
        k = torch.as_tensor(k, device=x.device).expand(x.shape[0])
        mean = self._step(x, k.float() / steps, 1.0 / steps, cond)
        return mean, torch.zeros((), device=x.device, dtype=x.dtype)

    def predict_clean(self, x_sigma: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Clean-action estimate for x = a + sigma * z (EDM convention); exact change of variables."""
        t = 1.0 / (1.0 + sigma.reshape(-1))
        x_t = x_sigma * t.view(-1, 1, 1)
        return x_t + (1 - t).view(-1, 1, 1) * self.velocity(x_t, t, cond)
