"""Gaussian-policy PPO (CleanRL's ppo_continuous_action, readable top to bottom), used as the locomotion
expert that produces D4RL-style "medium" and "expert" datasets, and as the RL baseline.

Observation normalization lives inside the agent (running mean/std buffers), so a saved agent carries
it: ``model.safetensors`` + ``config.json``, never pickle. Returns are scaled by a running std of the
discounted return during training only.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from robopolicy.atomic import atomic_output, write_json
from robopolicy.nn.encoder import mlp

OBS_KEY = "state"


@dataclass
class PPOConfig:
    task: str = "hopper"
    total_steps: int = 1_000_000
    n_envs: int = 8
    n_steps: int = 256  # rollout length per env and update
    lr: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    n_epochs: int = 10
    n_minibatches: int = 32
    clip: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: int = 64
    seed: int = 0
    # save a snapshot the first time the mean return of the last 20 episodes reaches each threshold
    levels: dict[str, float] = field(default_factory=dict)


class RunningNorm(nn.Module):
    """Running mean/variance (parallel Welford update) kept as buffers so it is saved with the agent."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    def update(self, x: torch.Tensor) -> None:
        x = x.double().reshape(-1, self.mean.shape[0])
        mean, var, n = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta, total = mean - self.mean, self.count + n
        self.var.copy_((self.var * self.count + var * n + delta**2 * self.count * n / total) / total)
        self.mean.add_(delta * n / total)
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / torch.sqrt(self.var + 1e-8)).clamp(-10, 10).float()


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

    def dist(self, obs: torch.Tensor) -> torch.distributions.Normal:
        return self._dist(self.norm(obs))

    def dist_and_value(self, obs: torch.Tensor) -> tuple[torch.distributions.Normal, torch.Tensor]:
        """Both heads from one normalization of the observation (the rollout and update need both)."""
        normed = self.norm(obs)
        return self._dist(normed), self.critic(normed).squeeze(-1)

    def _dist(self, normed: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(self.actor(normed), self.log_std.exp())


def save_agent(agent: Agent, directory: Path, config: PPOConfig, extra: dict) -> None:
    meta = {"ppo": asdict(config), "obs_dim": agent.norm.mean.shape[0], "act_dim": agent.log_std.shape[0], **extra}
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


def train(config: PPOConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Train PPO on ``config.task``; saves ``final/`` and one snapshot per reached level. Returns a log."""
    from robopolicy.sim import make_vector_env
    from robopolicy.task import load_task

    out_dir = Path(out_dir)
    torch.manual_seed(config.seed)
    task = load_task(config.task)
    envs = make_vector_env(task, config.n_envs, chunked=False)
    obs_dim, act_dim = task.obs[0].shape[0], task.action.dim
    low, high = np.array(task.action.low, np.float32), np.array(task.action.high, np.float32)
    agent = Agent(obs_dim, act_dim, config.hidden)
    optimizer = torch.optim.Adam(agent.parameters(), lr=config.lr, eps=1e-5)
    ret_norm = RunningNorm(1)

    T, N = config.n_steps, config.n_envs
    obs_buf = torch.zeros(T, N, obs_dim)
    act_buf, logp_buf = torch.zeros(T, N, act_dim), torch.zeros(T, N)
    rew_buf, done_buf, val_buf = torch.zeros(T, N), torch.zeros(T, N), torch.zeros(T, N)
    next_obs = torch.as_tensor(envs.reset(seed=config.seed)[0][OBS_KEY])
    next_done = torch.zeros(N)
    disc_ret = np.zeros(N)
    ep_ret, ep_len = np.zeros(N), np.zeros(N, int)
    finished: list[float] = []
    log: dict = {"updates": [], "levels": {}}
    n_updates = max(1, config.total_steps // (T * N))
    bar = tqdm(range(n_updates), desc=f"ppo {config.task}", disable=not progress)
    start = time.time()
    for update in bar:
        for group in optimizer.param_groups:  # linear learning-rate annealing
            group["lr"] = config.lr * (1 - update / n_updates)
        # ---- rollout --------------------------------------------------------------------------
        for t in range(T):
            obs_buf[t], done_buf[t] = next_obs, next_done
            agent.norm.update(next_obs)
            with torch.no_grad():
                dist, val_buf[t] = agent.dist_and_value(next_obs)
                action = dist.sample()
                logp_buf[t] = dist.log_prob(action).sum(-1)
            act_buf[t] = action
            obs, reward, terminated, truncated, _ = envs.step(np.clip(action.numpy(), low, high))
            done = terminated | truncated
            disc_ret = disc_ret * config.gamma + reward
            ret_norm.update(torch.as_tensor(disc_ret, dtype=torch.float64)[:, None])
            rew_buf[t] = torch.as_tensor(reward / np.sqrt(ret_norm.var.item() + 1e-8), dtype=torch.float32).clamp(-10, 10)
            ep_ret += reward
            ep_len += 1
            for i in np.flatnonzero(done):
                finished.append(float(ep_ret[i]))
                ep_ret[i], ep_len[i], disc_ret[i] = 0.0, 0, 0.0
            # gymnasium's next-step autoreset: the step after a done is a reset, bootstrapping stops there
            next_obs, next_done = torch.as_tensor(obs[OBS_KEY]), torch.as_tensor(done, dtype=torch.float32)
        # ---- advantages (GAE) -------------------------------------------------------------------
        with torch.no_grad():
            next_value = agent.value(next_obs)
        adv = torch.zeros(T, N)
        last = torch.zeros(N)
        for t in reversed(range(T)):
            nonterminal = 1.0 - (next_done if t == T - 1 else done_buf[t + 1])
            nv = next_value if t == T - 1 else val_buf[t + 1]
            delta = rew_buf[t] + config.gamma * nv * nonterminal - val_buf[t]
            last = delta + config.gamma * config.gae_lambda * nonterminal * last
            adv[t] = last
        returns = adv + val_buf
        # ---- PPO update ---------------------------------------------------------------------
        b_obs, b_act, b_logp = obs_buf.reshape(T * N, -1), act_buf.reshape(T * N, -1), logp_buf.reshape(-1)
        b_adv, b_ret = adv.reshape(-1), returns.reshape(-1)
        mb = T * N // config.n_minibatches
        for _ in range(config.n_epochs):
            for idx in torch.randperm(T * N).split(mb):
                dist, value = agent.dist_and_value(b_obs[idx])
                logp = dist.log_prob(b_act[idx]).sum(-1)
                ratio = (logp - b_logp[idx]).exp()
                a = b_adv[idx]
                a = (a - a.mean()) / (a.std() + 1e-8)
                pg_loss = torch.max(-a * ratio, -a * ratio.clamp(1 - config.clip, 1 + config.clip)).mean()
                v_loss = 0.5 * (value - b_ret[idx]).pow(2).mean()
                loss = pg_loss + config.vf_coef * v_loss - config.ent_coef * dist.entropy().sum(-1).mean()
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
                optimizer.step()
        # ---- bookkeeping --------------------------------------------------------------------
        recent = float(np.mean(finished[-20:])) if finished else float("nan")
        steps = (update + 1) * T * N
        log["updates"].append({"steps": steps, "mean_return_20": recent, "time_s": time.time() - start})
        bar.set_postfix(ret=f"{recent:.1f}", eps=len(finished))
        for level, threshold in config.levels.items():
            if level not in log["levels"] and finished and recent >= threshold:
                save_agent(agent, out_dir / level, config, {"task": config.task, "steps": steps, "mean_return_20": recent})
                log["levels"][level] = {"steps": steps, "mean_return_20": recent}
    envs.close()
    save_agent(agent, out_dir / "final", config, {"task": config.task, "steps": n_updates * T * N,
                                                   "mean_return_20": log["updates"][-1]["mean_return_20"]})
    write_json(out_dir / "log.json", log, indent=1)
    return log


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
            dist = self.agent.dist(torch.as_tensor(obs[OBS_KEY], dtype=torch.float32)[None])
            action = dist.mean + dist.stddev * torch.randn(dist.mean.shape, generator=self.generator) \
                if self.stochastic else dist.mean
        return np.clip(action[0].numpy(), self.low, self.high)
