"""Fine-tuning run configuration (`robopolicy finetune`), in `robopolicy/specs.py`'s style.

Plain dataclasses validated in `__post_init__`, read from TOML recipes (`robopolicy/rl/recipes/*.toml`) with
`--set key=value` overrides; errors name the field. Algorithm-specific settings live in `params` and are
validated by the algorithm's own `Params` dataclass (see `robopolicy.rl.algorithm`), as head params are.
Discounts are per executed environment step: a decision that ran n steps is discounted by gamma^n.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from robopolicy.specs import ConfigError, _require, apply_overrides, from_dict

RECIPES = resources.files("robopolicy.rl") / "recipes"


@dataclass
class RolloutConfig:
    """How experience is collected each iteration: every env is reset (seeded from (seed, iteration)), then
    runs `n_decisions` chunks; an episode still running at the end is bootstrapped from the critic."""

    n_envs: int = 8
    n_decisions: int = 25  # decisions (chunks) per env and iteration
    asynchronous: bool = False  # AsyncVectorEnv worker processes (slower than sync on 2 cores)
    # "ray": the envs live in Ray actors (robopolicy/sim/ray_vector.py, docs/distributed.md), on a local Ray or
    # the cluster at ray_address ("auto": the one this node joined); ray_workers defaults to one per Ray CPU
    vector_backend: str = "local"
    ray_workers: int | None = None
    ray_address: str | None = None

    def __post_init__(self) -> None:
        _require(self.n_envs >= 1, "rollout.n_envs", ">= 1", self.n_envs)
        _require(self.vector_backend in ("local", "ray"), "rollout.vector_backend", "'local' or 'ray'",
                 self.vector_backend)
        _require(self.ray_workers is None or self.ray_workers >= 1, "rollout.ray_workers", ">= 1", self.ray_workers)
        _require(self.n_decisions >= 1, "rollout.n_decisions", ">= 1", self.n_decisions)


@dataclass
class AdvantageConfig:
    gamma: float = 0.99  # per environment step
    gae_lambda: float = 0.95  # per decision
    reward_scaling: bool = True  # divide rewards by a running std of the discounted return
    normalize: bool = True  # advantages to zero mean, unit std over the iteration's batch

    def __post_init__(self) -> None:
        _require(0.0 < self.gamma <= 1.0, "advantage.gamma", "in (0, 1]", self.gamma)
        _require(0.0 <= self.gae_lambda <= 1.0, "advantage.gae_lambda", "in [0, 1]", self.gae_lambda)


@dataclass
class UpdateConfig:
    """The PPO update over update units (decisions, or DPPO's (decision, denoising step) pairs)."""

    epochs: int = 10
    minibatch_size: int = 256  # units per minibatch
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    clip: float = 0.2  # default clip range (algorithms may set their own per unit)
    value_coef: float = 0.5
    max_grad_norm: float = 1.0
    target_kl: float | None = None  # stop this iteration's epochs once the approximate KL exceeds it
    critic_warmup_iterations: int = 0  # the first iterations train the critic only (DPPO's practice)
    # cosine annealing of the actor's learning rate from actor_lr (its first iteration) to this at the last one;
    # absent: constant. Against the late decline of long runs (push_puck's DPPO peaked, then lost 10-20 points)
    actor_lr_final: float | None = None
    # "clip": PPO's clipped surrogate for every unit. "aspo" (FPO++'s asymmetric trust region): PPO's clip for
    # positive advantages, SPO's quadratic penalty (Xie et al. 2024) for negative ones, whose gradient pulls a
    # ratio back to 1 - clip instead of vanishing past it: pushing a flow's loss up is unbounded otherwise
    trust_region: Literal["clip", "aspo"] = "clip"

    def actor_lr_at(self, iteration: int, iterations: int) -> float:
        """The actor's learning rate in `iteration` (1-based) of `iterations`."""
        if self.actor_lr_final is None:
            return self.actor_lr
        first = self.critic_warmup_iterations + 1
        progress = min(max((iteration - first) / max(iterations - first, 1), 0.0), 1.0)
        return self.actor_lr_final + (self.actor_lr - self.actor_lr_final) * 0.5 * (1 + math.cos(math.pi * progress))

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "update.epochs", ">= 1", self.epochs)
        _require(self.minibatch_size >= 1, "update.minibatch_size", ">= 1", self.minibatch_size)
        _require(self.actor_lr > 0, "update.actor_lr", "> 0", self.actor_lr)
        _require(self.critic_lr > 0, "update.critic_lr", "> 0", self.critic_lr)
        _require(self.clip > 0, "update.clip", "> 0", self.clip)
        _require(self.max_grad_norm > 0, "update.max_grad_norm", "> 0", self.max_grad_norm)
        _require(self.target_kl is None or self.target_kl > 0, "update.target_kl", "> 0 or absent", self.target_kl)
        _require(self.critic_warmup_iterations >= 0, "update.critic_warmup_iterations", ">= 0",
                 self.critic_warmup_iterations)
        _require(self.actor_lr_final is None or 0 <= self.actor_lr_final <= self.actor_lr, "update.actor_lr_final",
                 f"in [0, actor_lr = {self.actor_lr}] or absent", self.actor_lr_final)
        _require(self.trust_region in ("clip", "aspo"), "update.trust_region", "'clip' or 'aspo'", self.trust_region)


@dataclass
class CriticConfig:
    hidden_dims: list[int] = field(default_factory=lambda: [256, 256])

    def __post_init__(self) -> None:
        _require(len(self.hidden_dims) > 0 and all(h > 0 for h in self.hidden_dims), "critic.hidden_dims",
                 "a non-empty list of positive sizes", self.hidden_dims)


@dataclass
class EvalSettings:
    """Held-out evaluation (test seeds) of the deployed policy every `every` iterations and at the end; the
    `best` checkpoint is the one with the highest success rate (mean return for tasks without success)."""

    every: int = 5
    n_episodes: int = 50
    n_envs: int = 10

    def __post_init__(self) -> None:
        _require(self.every >= 1, "eval.every", ">= 1", self.every)
        _require(self.n_episodes >= 1, "eval.n_episodes", ">= 1", self.n_episodes)
        _require(self.n_envs >= 1, "eval.n_envs", ">= 1", self.n_envs)


@dataclass
class ShieldSettings:
    """The deployment shield around every rollout and evaluation env (`robopolicy.hal.shield_env`), so the policy
    learns and is judged under the constraints it is deployed with. `hardware`: a hardware name or TOML path whose
    commands are the task's actions ("": no shield); `options`: `robopolicy.hal.shield.hardware.ShieldOptions`
    fields (default: deploy's defaults). `terminate`: CaT, constraints as terminations in the rollout envs (not
    in evaluation): a corrected step ends the episode with probability min(1, correction / `cat_scale`), and
    that step's reward is lowered by `cat_penalty`. CaT makes an ending a loss only if the future reward it cuts
    off is positive; on a task with negative rewards (push_puck's) ending early is a gain unless the penalty
    outweighs the rest of an episode's return, so a run there refuses `cat_penalty = 0` (see docs/finetuning.md)."""

    hardware: str = ""
    terminate: bool = False
    cat_scale: float = 0.1
    cat_penalty: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(self.cat_scale > 0, "shield.cat_scale", "> 0", self.cat_scale)
        _require(math.isfinite(self.cat_penalty) and self.cat_penalty >= 0, "shield.cat_penalty", "finite and >= 0",
                 self.cat_penalty)
        _require(bool(self.hardware) or not self.terminate, "shield.terminate",
                 "false unless shield.hardware is set", self.terminate)


@dataclass
class FinetuneConfig:
    task: str = ""
    algo: str = "dppo"
    params: dict[str, Any] = field(default_factory=dict)  # validated by the algorithm's Params
    iterations: int = 100
    seed: int = 0
    device: str = "auto"  # policy, critic and update; environments always step on the CPU
    out_dir: str = "runs/finetune"
    ckpt_every: int = 10
    tensorboard: bool = True
    progress: bool = True
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    eval: EvalSettings = field(default_factory=EvalSettings)
    shield: ShieldSettings = field(default_factory=ShieldSettings)

    def __post_init__(self) -> None:
        _require(bool(self.task), "task", "a task name (tasks/NAME.toml) or path", self.task)
        _require(self.iterations >= 1, "iterations", ">= 1", self.iterations)
        _require(self.ckpt_every >= 1, "ckpt_every", ">= 1", self.ckpt_every)


def recipe_names() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in RECIPES.iterdir() if p.name.endswith(".toml"))


def load_finetune_config(recipe: str | None, overrides: list[str], **fields: Any) -> FinetuneConfig:
    """A recipe (built-in name or TOML path; None: defaults) with `fields` (command-line values such as task
    and algo, when given) and then `--set` overrides applied."""
    data, where = read_recipe(recipe) if recipe is not None else ({}, "defaults")
    data.update({k: v for k, v in fields.items() if v is not None})
    apply_overrides(data, overrides)
    try:
        return from_dict(FinetuneConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def read_recipe(recipe: str, seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], str]:
    """A recipe's data and path. `base = "NAME"` starts from that recipe and overrides it table by table, so a
    variant states only what differs and cannot drift from the recipe it varies."""
    path = Path(recipe)
    if not path.exists() and recipe in recipe_names():
        path = Path(str(RECIPES / f"{recipe}.toml"))
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such recipe file (built-in recipes: {recipe_names()})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from exc
    base = data.pop("base", None)
    if base is None:
        return data, str(path)
    if not isinstance(base, str) or base in seen or base == recipe:
        raise ConfigError(f"{path}: base: expected the name of another recipe, not one of {[recipe, *seen]}, "
                          f"got {base!r}")
    parent, _ = read_recipe(base, (*seen, recipe))
    return _merged(parent, data), str(path)


def _merged(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in child.items():
        both_tables = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if both_tables else value
    return out
