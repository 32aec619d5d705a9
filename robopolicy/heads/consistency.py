"""Consistency head: one network f(x_sigma, sigma) that maps any point of the probability-flow ODE to its origin.

EDM convention x_sigma = action + sigma * z. The boundary condition f(x, sigma_min) = x holds by construction
through c_skip/c_out, so a single evaluation from sigma_max is a sample and more steps trade speed for quality.
Two ways to train it: `training` (improved consistency training, Song & Dhariwal 2023: stop-gradient target,
pseudo-Huber loss, doubling discretization curriculum, lognormal noise-level sampling) and `distillation`
(consistency distillation: the target comes from one ODE step of an attached diffusion/flow teacher).
The RL chain is multistep consistency sampling: x_{k+1} ~ N(f(x_k, sigma_k), max(sigma_{k+1}, min_std)^2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol, cast

import torch

from robopolicy.heads.base import Head, axpby, check_params, randn


@dataclass
class ConsistencyParams:
    mode: Literal["training", "distillation"] = "training"
    inference_steps: int = 4  # 1 works, but after a short run extra restarts remove most between-mode samples
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    rho: float = 7.0
    multistep_sigma: float = 0.8  # highest restart noise level of multistep sampling
    time_scale: float = 100.0  # network time input = time_scale * ln(sigma) / 4 (EDM's c_noise, rescaled)
    ct_initial_scales: int = 10
    ct_final_scales: int = 160
    ct_total_steps: int = 2000  # training updates over which the discretization doubles up to ct_final_scales
    p_mean: float = -1.1
    p_std: float = 2.0
    huber_c: float = 0.00054  # pseudo-Huber constant per sqrt(chunk size), as in iCT
    cd_scales: int = 18  # Karras grid for teachers that do not expose `sigma_grid()`
    cd_solver: Literal["euler", "heun"] = "heun"
    min_std: float = 0.1

    def __post_init__(self) -> None:
        checks = [
            ("inference_steps", self.inference_steps >= 1, ">= 1"),
            ("sigma_min", 0 < self.sigma_min < self.sigma_max, f"in (0, sigma_max={self.sigma_max})"),
            ("sigma_data", self.sigma_data > 0, "> 0"),
            ("rho", self.rho > 0, "> 0"),
            ("multistep_sigma", self.sigma_min < self.multistep_sigma <= self.sigma_max,
             "in (sigma_min, sigma_max]"),
            ("time_scale", self.time_scale > 0, "> 0"),
            ("ct_initial_scales", self.ct_initial_scales >= 1, ">= 1"),
            ("ct_final_scales", self.ct_final_scales >= self.ct_initial_scales,
             f">= ct_initial_scales={self.ct_initial_scales}"),
            ("ct_total_steps", self.ct_total_steps >= 1, ">= 1"),
            ("p_std", self.p_std > 0, "> 0"),
            ("huber_c", self.huber_c > 0, "> 0"),
            ("cd_scales", self.cd_scales >= 2, ">= 2"),
            ("min_std", self.min_std > 0, "> 0"),
        ]
        check_params(self, checks)


class Teacher(Protocol):
    """What distillation needs from a trained head (diffusion and flow heads have it)."""

    def predict_clean(self, x_sigma: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor: ...


class ConsistencyHead(Head):
    name = "consistency"
    Params = ConsistencyParams
    params: ConsistencyParams
    ct_step: torch.Tensor  # buffer

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Training updates seen so far; drives the iCT curriculum and is saved so a resumed run continues it.
        self.register_buffer("ct_step", torch.zeros((), dtype=torch.long))
        self._teacher: list[Teacher] = []  # a plain list, so the teacher is neither a submodule nor checkpointed
        self._sigma_lists: dict[int, list[float]] = {}

    def set_teacher(self, teacher: Head) -> None:
        """Attach (and freeze) a trained head with `predict_clean(x_sigma, sigma, cond)` for distillation."""
        if not callable(getattr(teacher, "predict_clean", None)):
            raise TypeError(f"teacher head {type(teacher).__name__} has no predict_clean(x_sigma, sigma, cond)")
        teacher.eval().requires_grad_(False)
        self._teacher[:] = [cast(Teacher, teacher)]  # predict_clean checked above

    @property
    def teacher(self) -> Teacher | None:
        return self._teacher[0] if self._teacher else None

    # ---- the consistency function ---------------------------------------------------------------------------

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: torch.Tensor) -> torch.Tensor:
        """f_theta(x, sigma) = c_skip x + c_out F(c_in x, c_noise); sigma is (B,), or one float for the batch.

        The float form (used when sampling) keeps the coefficients in Python, which halves 1-step latency
        for small networks.
        """
        p = self.params
        c_noise: torch.Tensor | float
        if isinstance(sigma, float):
            s: torch.Tensor | float = sigma
            c_noise = p.time_scale * 0.25 * math.log(sigma)
        else:
            s = sigma.view(-1, 1, 1)
            c_noise = p.time_scale * 0.25 * sigma.log()
        c_skip = p.sigma_data ** 2 / ((s - p.sigma_min) ** 2 + p.sigma_data ** 2)
        c_out = p.sigma_data * (s - p.sigma_min) / (s ** 2 + p.sigma_data ** 2) ** 0.5
        c_in = 1.0 / (s ** 2 + p.sigma_data ** 2) ** 0.5
        return axpby(c_skip, x, c_out, self.net(c_in * x, c_noise, cond))

    def karras_sigmas(self, n: int, device: torch.device | None = None, top: float | None = None) -> torch.Tensor:
        """n noise levels from sigma_min to `top` (default sigma_max), ascending, uniform in sigma^(1/rho)."""
        p = self.params
        ramp = torch.linspace(0, 1, n, device=device, dtype=torch.float64)
        lo, hi = p.sigma_min ** (1 / p.rho), (top or p.sigma_max) ** (1 / p.rho)
        return ((lo + ramp * (hi - lo)) ** p.rho).float()

    def sampling_sigmas(self, steps: int, device: torch.device | None = None) -> torch.Tensor:
        """Descending noise levels of a `steps`-step sampler: sigma_max, then restarts at or below multistep_sigma.

        Restarting from a moderate noise level (iCT hand-picks 0.821 for two steps) lets the later steps
        resolve which mode a chunk belongs to, where a network trained briefly is already sharp.
        """
        later = self.karras_sigmas(steps, device, top=self.params.multistep_sigma).flip(0)[:-1]
        return torch.cat([later.new_tensor([self.params.sigma_max]), later])

    # ---- training -------------------------------------------------------------------------------------------

    def _pseudo_huber(self, diff: torch.Tensor) -> torch.Tensor:
        c = self.params.huber_c * math.sqrt(diff[0].numel())
        return (diff.flatten(1).pow(2).sum(-1) + c * c).sqrt() - c

    def num_scales(self) -> int:
        """iCT curriculum: the discretization doubles from ct_initial to ct_final scales over ct_total_steps."""
        p = self.params
        stage_len = max(1, p.ct_total_steps // (int(math.log2(p.ct_final_scales / p.ct_initial_scales)) + 1))
        return min(p.ct_initial_scales * 2 ** (int(self.ct_step) // stage_len), p.ct_final_scales) + 1

    def _ct_pairs(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Adjacent (sigma_i, sigma_{i+1}) with i drawn so that ln(sigma) is roughly N(p_mean, p_std^2)."""
        p = self.params
        sig = self.karras_sigmas(self.num_scales(), device)
        cdf = torch.erf((sig.log() - p.p_mean) / (math.sqrt(2) * p.p_std))
        i = torch.multinomial(cdf[1:] - cdf[:-1], batch, replacement=True)
        return sig[i], sig[i + 1]

    def _cd_grid(self, device: torch.device) -> torch.Tensor:
        """Karras grid of cd_scales levels, interior levels snapped onto the teacher's trained noise levels if known.

        A coarse grid lets the boundary condition propagate up in few updates (the teacher's own 100-level grid
        is too fine for a short run); snapping keeps the teacher queried where it was trained.
        """
        grid = self.karras_sigmas(self.params.cd_scales, device)
        levels_fn = getattr(self.teacher, "sigma_grid", None)
        if levels_fn is None:
            return grid
        levels = levels_fn().to(device).float().log()
        inner = levels[(grid[1:-1, None].log() - levels[None]).abs().argmin(-1)].exp()
        return torch.cat([grid[:1], inner.unique(), grid[-1:]])

    @torch.no_grad()
    def _teacher_step(self, x: torch.Tensor, s_hi: torch.Tensor, s_lo: torch.Tensor,
                      cond: torch.Tensor) -> torch.Tensor:
        """One probability-flow ODE step dx/dsigma = (x - D(x, sigma)) / sigma from s_hi down to s_lo."""
        teacher = self.teacher
        assert teacher is not None
        hi, lo = s_hi.view(-1, 1, 1), s_lo.view(-1, 1, 1)
        d_hi = (x - teacher.predict_clean(x, s_hi, cond)) / hi
        x_lo = x + (lo - hi) * d_hi
        if self.params.cd_solver == "heun":
            # Steps that end at sigma_min stay Euler (as in EDM's sampler): dividing by sigma_min would blow up
            # any teacher error there, e.g. a diffusion teacher clipping its estimate to [-1, 1].
            d_lo = (x_lo - teacher.predict_clean(x_lo, s_lo, cond)) / lo
            heun = x + (lo - hi) * 0.5 * (d_hi + d_lo)
            x_lo = torch.where(lo > self.params.sigma_min, heun, x_lo)
        return x_lo

    def loss(self, cond: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        b, device = actions.shape[0], actions.device
        z = torch.randn_like(actions)
        if self.params.mode == "distillation":
            if self.teacher is None:
                raise RuntimeError("consistency distillation needs a teacher: call head.set_teacher(trained_head)")
            grid = self._cd_grid(device)
            i = torch.randint(0, len(grid) - 1, (b,), device=device)
            s_lo, s_hi = grid[i], grid[i + 1]
            x_hi = actions + s_hi.view(-1, 1, 1) * z
            x_lo = self._teacher_step(x_hi, s_hi, s_lo, cond)
            weight = torch.ones_like(s_hi)
        else:
            s_lo, s_hi = self._ct_pairs(b, device)
            x_hi = actions + s_hi.view(-1, 1, 1) * z
            x_lo = actions + s_lo.view(-1, 1, 1) * z
            weight = 1.0 / (s_hi - s_lo)
            if self.training:
                self.ct_step += 1
        with torch.no_grad():  # stop-gradient target (iCT drops the EMA teacher network)
            target = self.denoise(x_lo, s_lo, cond)
        return (weight * self._pseudo_huber(self.denoise(x_hi, s_hi, cond) - target)).mean()

    # ---- inference ------------------------------------------------------------------------------------------

    def noise_shape(self, batch: int, steps: int) -> tuple[int, ...]:
        """The start at sigma_max plus one restart per later step."""
        return (batch, steps, *self.chunk_shape)

    def prepare_sampling(self, steps: int) -> None:
        if steps not in self._sigma_lists:  # cached: building the grid costs more than a small network forward
            self._sigma_lists[steps] = self.sampling_sigmas(steps).tolist()

    def sample_from_noise(self, cond: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
        """Multistep consistency sampling; steps=1 is a single network evaluation at sigma_max."""
        self.prepare_sampling(steps)
        sigmas = self._sigma_lists[steps]
        x = noise[:, 0] * sigmas[0]
        for k, sigma in enumerate(sigmas):
            a = self.denoise(x, sigma, cond)
            if k + 1 < len(sigmas):
                x = torch.add(a, noise[:, k + 1], alpha=math.sqrt(sigmas[k + 1] ** 2 - self.params.sigma_min ** 2))
        return a

    # ---- RL hooks ---------------------------------------------------------------------------------------------

    def initial_latent(self, batch: int, cond: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self.latent_from_noise(randn((batch, *self.chunk_shape), generator, cond))

    def latent_from_noise(self, noise: torch.Tensor) -> torch.Tensor:
        return self.params.sigma_max * noise

    def transition(self, cond: torch.Tensor, x: torch.Tensor, k: torch.Tensor | int,
                   steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        sigmas = torch.cat([self.sampling_sigmas(steps, x.device), torch.zeros(1, device=x.device)])
        k = torch.as_tensor(k, device=x.device).expand(x.shape[0])
        mean = self.denoise(x, sigmas[k], cond)
        std = sigmas[k + 1].clamp(min=self.params.min_std).view(-1, 1, 1).expand_as(mean)
        return mean, std

    def sampler_transition(self, cond: torch.Tensor, x: torch.Tensor, k: torch.Tensor | int,
                           steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of multistep sampling's step k exactly as `sample_from_noise` runs it: the denoised
        estimate, then the restart noise sqrt(sigma_{k+1}^2 - sigma_min^2) (0 after the last step).

        Noise-injected fine-tuning (`robopolicy.rl.noise_injection`) adds its learned std to this one.
        """
        sigmas = self.sampling_sigmas(steps, x.device)
        restart = torch.cat([(sigmas[1:] ** 2 - self.params.sigma_min ** 2).sqrt(), sigmas.new_zeros(1)])
        k = torch.as_tensor(k, device=x.device).expand(x.shape[0])
        return self.denoise(x, sigmas[k], cond), restart[k].view(-1, 1, 1)
