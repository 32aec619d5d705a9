"""The Gaussian PPO agent that serves as the locomotion expert (D4RL-style "medium"/"expert" datasets).

It lives with the other experts so that demonstration collection (`robopolicy.sim.collect`) needs nothing
from the RL layer: `robopolicy.rl.ppo` trains it and imports it from here (imports point one way, rl -> sim).
A saved agent is ``model.safetensors`` + ``config.json`` (never pickle); observation normalization lives
inside the agent (running mean/std buffers), so a saved agent carries it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from robopolicy.atomic import atomic_output
from robopolicy.heads.base import gaussian_log_prob
from robopolicy.nn.encoder import mlp
from robopolicy.nn.normalizer import RunningNorm

OBS_KEY = "state"


def _mlp(n_in: int, n_out: int, hidden: int, out_std: float) -> nn.Sequential:
    net = mlp([n_in, hidden, hidden, n_out], nn.Tanh)
    for layer in net:
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, np.sqrt(2) if layer is not net[-1] else out_std)
            nn.init.zeros_(layer.bias)
    return net


class Agent(nn.Module):
    """Actor: Gaussian with a state-independent log-std; critic: a separate MLP."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.norm = RunningNorm(obs_dim)
        self.actor = _mlp(obs_dim, act_dim, hidden, 0.01)
        self.critic = _mlp(obs_dim, 1, hidden, 1.0)
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.norm(obs)).squeeze(-1)

    def mean_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The action distribution's mean and std (B, act_dim)."""
        mean = self.actor(self.norm(obs))
        return mean, self.log_std.exp().expand_as(mean)

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sampled action, its log-probability, value) from one normalization (torch's global RNG)."""
        normed = self.norm(obs)
        mean = self.actor(normed)
        std = self.log_std.exp().expand_as(mean)
        action = mean + std * torch.randn_like(mean)
        return action, gaussian_log_prob(action, mean, std), self.critic(normed).squeeze(-1)

    def evaluate(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log-probability of `actions`, entropy, value) from one normalization of the observations."""
        normed = self.norm(obs)
        mean = self.actor(normed)
        std = self.log_std.exp().expand_as(mean)
        entropy = (self.log_std + 0.5 * math.log(2 * math.pi * math.e)).sum().expand(mean.shape[0])
        return gaussian_log_prob(actions, mean, std), entropy, self.critic(normed).squeeze(-1)


def save_agent(agent: Agent, directory: Path, ppo_config: dict[str, Any], extra: dict) -> None:
    meta = {"ppo": ppo_config, "obs_dim": agent.norm.mean.shape[0], "act_dim": agent.log_std.shape[0], **extra}
    with atomic_output(directory, overwrite=True) as tmp:
        tmp.mkdir()
        save_file({k: v.contiguous() for k, v in agent.state_dict().items()}, tmp / "model.safetensors")
        (tmp / "config.json").write_text(json.dumps(meta, indent=1))


def load_agent(directory: str | Path) -> tuple[Agent, dict]:
    directory = Path(directory)
    meta = json.loads((directory / "config.json").read_text())
    agent = Agent(meta["obs_dim"], meta["act_dim"], meta["ppo"]["hidden"])
    agent.load_state_dict(load_file(directory / "model.safetensors"))
    return agent.eval(), meta


class PPOExpert:
    """A saved PPO agent with the scripted-expert interface (``reset``/``act``), so ``robopolicy collect``
    makes D4RL-style datasets from it. ``stochastic`` samples from the Gaussian, as D4RL's data did."""

    def __init__(self, agent: Agent, low: np.ndarray, high: np.ndarray, stochastic: bool = True) -> None:
        self.agent, self.low, self.high, self.stochastic = agent, low, high, stochastic
        self.generator = torch.Generator().manual_seed(0)

    @classmethod
    def load(cls, directory: str | Path, stochastic: bool = True) -> PPOExpert:
        from robopolicy.task import load_task

        agent, meta = load_agent(directory)
        task = load_task(meta["task"])
        return cls(agent, np.array(task.action.low, np.float32), np.array(task.action.high, np.float32), stochastic)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.generator.manual_seed(seed)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            mean, std = self.agent.mean_std(torch.as_tensor(obs[OBS_KEY], dtype=torch.float32)[None])
            action = mean + std * torch.randn(mean.shape, generator=self.generator) if self.stochastic else mean
        return np.clip(action[0].numpy(), self.low, self.high)
