"""The fine-tuning algorithms by name, for `--algo` and `--help`: a module path and a one-line summary each.

Kept free of torch (the classes are imported on first use), so the command line starts fast. Adding an
algorithm = one module implementing `robopolicy.rl.algorithm.Algorithm` + one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from robopolicy.specs import ConfigError


@dataclass(frozen=True)
class AlgorithmEntry:
    target: str  # "module:Class"
    summary: str  # one line for --help


ALGORITHMS: dict[str, AlgorithmEntry] = {
    "dppo": AlgorithmEntry("robopolicy.rl.dppo:DPPO",
                           "DPPO: PPO over the last K' denoising steps of a diffusion or energy_diffusion (or any "
                           "chain) head"),
    "ppo": AlgorithmEntry("robopolicy.rl.gaussian:GaussianPPO",
                          "Gaussian PPO on action chunks (regression head + learned std); the baseline"),
    "fpo": AlgorithmEntry("robopolicy.rl.fpo:FPO",
                          "FPO/FPO++: ratio exp(L_old - L_new) from stored flow-matching losses (flow head), "
                          "or from the energy's likelihood estimate (energy head)"),
    "reinflow": AlgorithmEntry("robopolicy.rl.noise_injection:ReinFlow",
                               "ReinFlow-style: a learned noise std makes a few-step flow, consistency or DDIM sampler "
                               "a Gaussian chain with exact log-probs, fine-tuned with PPO"),
}


def algorithm_class(name: str) -> Any:
    """The registered class (a `robopolicy.rl.algorithm.Algorithm` subclass); an unknown name is a ConfigError."""
    if name not in ALGORITHMS:
        raise ConfigError(f"algo: expected one of {sorted(ALGORITHMS)}, got {name!r}")
    module, cls = ALGORITHMS[name].target.split(":")
    return getattr(importlib.import_module(module), cls)


def describe_algorithms() -> str:
    """One line per registered algorithm, for --help."""
    return "\n".join(f"  {name:8s} {entry.summary}" for name, entry in sorted(ALGORITHMS.items()))
