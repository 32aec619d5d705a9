"""Gaussian-policy PPO (CleanRL's ppo_continuous_action, readable top to bottom) that trains the locomotion
expert behind the D4RL-style "medium" and "expert" datasets (`robopolicy ppo`).

The agent, its saved format and its expert interface live in `robopolicy.sim.experts.ppo_agent`, beside the
other experts, so collection needs nothing from this layer. Returns are scaled by a running std of the
discounted return during training only. The envs autoreset in the same step and each call is read and each
episode counted by `robopolicy.episodes`, so every batch row is a step that ran (under gymnasium's default
next-step autoreset a reset call, its action ignored, used to enter the batch), and the advantages are the
fine-tuning machinery's GAE (`robopolicy.rl.gae`), so a truncated episode bootstraps from its true final
observation. (The fine-tuning baseline `robopolicy finetune --algo ppo` is the chunked Gaussian policy of
`robopolicy.rl.gaussian`, on the shared fine-tuning machinery.)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from robopolicy.atomic import write_json
from robopolicy.episodes import EpisodeTally, step_vector_env
from robopolicy.nn.normalizer import RunningNorm
from robopolicy.rl.gae import compute_gae
from robopolicy.sim.experts.ppo_agent import OBS_KEY, Agent, save_agent


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


def train(config: PPOConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Train PPO on ``config.task``; saves ``final/`` and one snapshot per reached level. Returns a log."""
    from robopolicy.sim import make_vector_env
    from robopolicy.task import load_task

    out_dir = Path(out_dir)
    torch.manual_seed(config.seed)
    task = load_task(config.task)
    envs = make_vector_env(task, config.n_envs, chunked=False, same_step_autoreset=True)
    obs_dim, act_dim = task.obs[0].shape[0], task.action.dim
    low, high = np.array(task.action.low, np.float32), np.array(task.action.high, np.float32)
    agent = Agent(obs_dim, act_dim, config.hidden)
    optimizer = torch.optim.Adam(agent.parameters(), lr=config.lr, eps=1e-5)
    ret_norm = RunningNorm(1)

    T, N = config.n_steps, config.n_envs
    obs_buf = torch.zeros(T, N, obs_dim)
    act_buf, logp_buf = torch.zeros(T, N, act_dim), torch.zeros(T, N)
    rew_buf, val_buf, final_val_buf = torch.zeros(T, N), torch.zeros(T, N), torch.zeros(T, N)
    term_buf, trunc_buf = torch.zeros(T, N, dtype=torch.bool), torch.zeros(T, N, dtype=torch.bool)
    next_obs = torch.as_tensor(envs.reset(seed=config.seed)[0][OBS_KEY])
    disc_ret = np.zeros(N)
    tally = EpisodeTally(N)
    finished: list[float] = []
    log: dict = {"updates": [], "levels": {}}
    n_updates = max(1, config.total_steps // (T * N))
    bar = tqdm(range(n_updates), desc=f"ppo {config.task}", disable=not progress)
    start = time.time()
    for update in bar:
        for group in optimizer.param_groups:  # linear learning-rate annealing
            group["lr"] = config.lr * (1 - update / n_updates)
        # ---- rollout (same-step autoreset: every row is a step that ran) -------------------------
        for t in range(T):
            obs_buf[t] = next_obs
            agent.norm.update(next_obs)
            with torch.no_grad():
                action, logp_buf[t], val_buf[t] = agent.act(next_obs)
            act_buf[t] = action
            step = step_vector_env(envs, np.clip(action.numpy(), low, high), chunked=False)
            disc_ret = disc_ret * config.gamma + step.reward
            ret_norm.update(torch.as_tensor(disc_ret, dtype=torch.float64)[:, None])
            scaled = step.reward / np.sqrt(ret_norm.var.item() + 1e-8)
            rew_buf[t] = torch.as_tensor(scaled, dtype=torch.float32).clamp(-10, 10)
            term_buf[t], trunc_buf[t] = torch.as_tensor(step.terminated), torch.as_tensor(step.truncated)
            finished += [f.ret for f in tally.add(step.reward, step.n_steps, step.success, step.done)]
            disc_ret[step.done] = 0.0
            if step.done.any():  # the value an ended episode bootstraps from: its true final observation's
                with torch.no_grad():
                    final_val_buf[t] = agent.value(torch.as_tensor(step.after[OBS_KEY]))
            next_obs = torch.as_tensor(step.obs[OBS_KEY])
        # ---- advantages (GAE, the fine-tuning machinery's, one env step per row) -------------------
        with torch.no_grad():
            next_values = torch.cat([val_buf[1:], agent.value(next_obs)[None]])
        next_values = torch.where(term_buf | trunc_buf, final_val_buf, next_values)
        adv, returns = compute_gae(rew_buf, val_buf, next_values, torch.ones(T, N, dtype=torch.long), term_buf,
                                   trunc_buf, config.gamma, config.gae_lambda)
        # ---- PPO update ---------------------------------------------------------------------
        b_obs, b_act, b_logp = obs_buf.reshape(T * N, -1), act_buf.reshape(T * N, -1), logp_buf.reshape(-1)
        b_adv, b_ret = adv.reshape(-1), returns.reshape(-1)
        mb = T * N // config.n_minibatches
        for _ in range(config.n_epochs):
            for idx in torch.randperm(T * N).split(mb):
                logp, entropy, value = agent.evaluate(b_obs[idx], b_act[idx])
                ratio = (logp - b_logp[idx]).exp()
                a = b_adv[idx]
                a = (a - a.mean()) / (a.std() + 1e-8)
                pg_loss = torch.max(-a * ratio, -a * ratio.clamp(1 - config.clip, 1 + config.clip)).mean()
                v_loss = 0.5 * (value - b_ret[idx]).pow(2).mean()
                loss = pg_loss + config.vf_coef * v_loss - config.ent_coef * entropy.mean()
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
                save_agent(agent, out_dir / level, asdict(config),
                           {"task": config.task, "steps": steps, "mean_return_20": recent})
                log["levels"][level] = {"steps": steps, "mean_return_20": recent}
    envs.close()
    save_agent(agent, out_dir / "final", asdict(config), {"task": config.task, "steps": n_updates * T * N,
                                                   "mean_return_20": log["updates"][-1]["mean_return_20"]})
    write_json(out_dir / "log.json", log, indent=1)
    return log
