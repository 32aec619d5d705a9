"""The fine-tuning run: rollouts, advantages, PPO update, evaluation, checkpoints, logs and exact resume.

One iteration = reset the vector envs with seeds derived from (seed, iteration), collect `n_decisions` chunks
per env, compute values and GAE, run the PPO update, log a row, and every `eval.every` iterations evaluate the
deployed policy on held-out test seeds (`robopolicy.eval.protocol`). Everything random in an iteration is
seeded from (seed, iteration), and the reset at its start makes it independent of where the previous one
stopped, so a run resumed from a checkpoint logs exactly what it would have logged uninterrupted (as the BC
trainer's runs do). Outputs are the BC trainer's: `config.json`, `log.csv`, `tb/`, and
`checkpoints/{step_000010, latest, best}`, each an ordinary policy checkpoint (read by `Policy.load` and
`robopolicy eval` unchanged) plus the critic, optimizers and reward statistics as training state.

Under torchrun (docs/distributed.md) every rank runs `rollout.n_envs / world_size` of the iteration's envs, on
its own slice of the iteration's env seeds and with its own sampling seed (seed, iteration, rank), and the
learner is data-parallel: gradients are averaged over ranks, and everything that decides an update (the
running reward scale, advantage normalization, the target-KL stop) is computed over all ranks' data, so the
ranks' parameters stay identical. Rank 0 alone evaluates and writes logs (global numbers) and checkpoints;
every rank resumes from the same checkpoint. `rollout.n_envs` and `update.minibatch_size` are global.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from robopolicy.atomic import atomic_output, write_json
from robopolicy.checkpoint import CheckpointError, load_train_state, save_checkpoint
from robopolicy.policy import Policy, load_policy
from robopolicy.rl.algorithm import AlgorithmContext, algorithm_class, build_algorithm
from robopolicy.rl.collector import Collector, Rollout
from robopolicy.rl.config import FinetuneConfig
from robopolicy.rl.critic import Critic
from robopolicy.rl.gae import RewardScaler, compute_gae
from robopolicy.rl.update import Batch, ppo_update
from robopolicy.specs import ConfigError, from_dict, to_dict
from robopolicy.task import TaskSpec, load_task
from robopolicy.train import distributed
from robopolicy.train.distributed import SINGLE_PROCESS, Dist
from robopolicy.train.runlog import RunLog
from robopolicy.train.state import flatten_optimizer, unflatten_optimizer
from robopolicy.train.trainer import BEST, LATEST, _checkpoint_to_resume, seed_everything

if TYPE_CHECKING:
    from robopolicy.hal.shield_env import EnvShield

SCRATCH = "scratch"
FORMAT = "robopolicy-finetune-state"
FORMAT_VERSION = 1
COLUMNS = ["step", "env_steps", "return", "success_rate", "episode_length", "episodes", "eval_success",
           "eval_return", "policy_loss", "value_loss", "approx_kl", "clip_fraction", "ratio_mean", "ratio_max",
           "explained_variance", "chain_std", "bc_loss", "actor_grad_norm", "actor_lr", "minibatches", "kl_stopped",
           "action_drift", "skipped_steps", "shield_rate", "shield_cat_terminations", "shield_faults",
           "eval_shield_rate", "env_steps_per_s", "env_time_s", "policy_time_s", "update_time_s", "elapsed_s"]
TIMING_COLUMNS = {"env_steps_per_s", "env_time_s", "policy_time_s", "update_time_s", "elapsed_s"}


@dataclass
class Progress:
    iteration: int = 0
    env_steps: int = 0
    best_metric: float | None = None  # eval success rate (mean return without a success rule)
    best_iteration: int | None = None
    elapsed_s: float = 0.0


@dataclass
class FinetuneResult:
    policy: Policy
    out_dir: Path
    progress: Progress
    last_row: dict[str, Any]

    @property
    def checkpoints(self) -> Path:
        return self.out_dir / "checkpoints"


def check_task(task: TaskSpec, policy: Policy, checkpoint: str) -> None:
    """The task must give the observations the policy reads and take the actions it writes."""
    config = policy.config
    if config.action.dim != task.action.dim:
        raise ConfigError(f"task {task.name}: its action space ({task.action.dim}-d) differs from checkpoint "
                          f"{checkpoint}'s ({config.action.dim}-d)")
    shapes = {o.key: o.shape for o in task.obs}
    for spec in config.obs:
        if shapes.get(spec.key) != spec.shape:
            raise ConfigError(f"task {task.name}: observation {spec.key!r} is {shapes.get(spec.key)}, checkpoint "
                              f"{checkpoint} expects {spec.shape}")


def _prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def _part(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def check_world_size(config: FinetuneConfig, info: Dist) -> None:
    """The global envs and minibatch split evenly over the ranks, or they would disagree on the update."""
    for key, value in (("rollout.n_envs", config.rollout.n_envs),
                       ("update.minibatch_size", config.update.minibatch_size)):
        if value % info.world_size:
            raise ConfigError(f"{key}: expected a multiple of the world size {info.world_size} (torchrun processes; "
                              f"it is global, split evenly over them), got {value}")


class Finetuner:
    """Builds the policy (via the algorithm), critic, optimizers and envs from a FinetuneConfig, then runs.
    `info`: the torchrun process group this rank is part of (a single process by default)."""

    def __init__(self, config: FinetuneConfig, checkpoint: str, resume_from: Path | None = None,
                 info: Dist = SINGLE_PROCESS) -> None:
        check_world_size(config, info)
        self.config, self.checkpoint, self.info = config, checkpoint, info
        self.task = load_task(config.task)
        self.device = distributed.resolve_device(config.device, info.local_rank)
        self.out_dir = Path(config.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        seed_everything(config.seed)  # the same on every rank: identical initial weights
        if resume_from is not None:
            start = load_policy(resume_from, device=self.device)
        elif checkpoint == SCRATCH:
            start = algorithm_class(config.algo).scratch_policy(self.task, config.params).to(self.device)
        else:
            start = load_policy(checkpoint, device=self.device)
        check_task(self.task, start, checkpoint)
        self.shield = self._env_shield()
        context = AlgorithmContext(start.config.n_action_steps, self.device)
        self.algorithm = build_algorithm(config.algo, start, config.params, context)
        # acts as deployed (a center crop, not training's random one) on every rank, before and after evaluations
        self.policy = self.algorithm.policy.to(self.device).eval()
        self.critic = Critic(self.policy.encoder.out_dim, config.critic.hidden_dims).to(self.device)
        self.actor_opt = torch.optim.Adam(self.algorithm.param_groups(), lr=config.update.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.update.critic_lr)
        self.rewards = RewardScaler()
        self.progress = Progress()
        if resume_from is not None:
            self.load_state(resume_from)

    def _env_shield(self) -> EnvShield | None:
        """The shield every env gets (config.shield), checked against the task before any env is built."""
        settings = self.config.shield
        if not settings.hardware:
            return None
        from robopolicy.sim.rendering import select_gl_backend

        select_gl_backend()  # before the shield imports mujoco
        from robopolicy.hal.shield.hardware import ShieldOptions
        from robopolicy.hal.shield_env import env_shield

        options = from_dict(ShieldOptions, settings.options, "shield.options")
        return env_shield(settings.hardware, self.task, options, settings.terminate, settings.cat_scale,
                          settings.cat_penalty)

    # ---- checkpoints ----------------------------------------------------------------------------------------

    def save(self, *names: str) -> None:
        """Write the state once as checkpoint `names[0]` and copy it to the other names."""
        actor_tensors, actor_meta = flatten_optimizer(self.actor_opt.state_dict())
        critic_tensors, critic_meta = flatten_optimizer(self.critic_opt.state_dict())
        tensors = {**_prefixed("critic", self.critic.state_dict()), **_prefixed("reward", self.rewards.state_dict()),
                   **_prefixed("actor_opt", actor_tensors), **_prefixed("critic_opt", critic_tensors)}
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "progress": dataclasses.asdict(self.progress),
                "actor_opt": actor_meta, "critic_opt": critic_meta}
        first = self.ckpt_dir / names[0]
        save_checkpoint(first, self.policy, train_tensors=tensors, train_json=meta,
                        extra_config={"finetune": to_dict(self.config), "pretrained": self.checkpoint})
        for name in names[1:]:
            with atomic_output(self.ckpt_dir / name, overwrite=True) as tmp:
                shutil.copytree(first, tmp)

    def load_state(self, path: Path) -> None:
        tensors, meta = load_train_state(path)
        where = path / "train_state.json"
        if meta.get("format") != FORMAT or not isinstance(meta.get("format_version"), int) \
                or meta["format_version"] > FORMAT_VERSION:
            raise CheckpointError(f"{where}: field 'format' expected {FORMAT!r} version <= {FORMAT_VERSION} "
                                  f"(a fine-tuning checkpoint), got {meta.get('format')!r}")
        self.critic.load_state_dict(_part("critic", tensors))
        self.rewards.load_state_dict(_part("reward", tensors))
        self.actor_opt.load_state_dict(unflatten_optimizer(_part("actor_opt", tensors), meta["actor_opt"]))
        self.critic_opt.load_state_dict(unflatten_optimizer(_part("critic_opt", tensors), meta["critic_opt"]))
        self.progress = Progress(**meta["progress"])

    # ---- one iteration --------------------------------------------------------------------------------------

    def _check_cat_rewards(self, rollout: Rollout) -> None:
        """CaT without a penalty on negative rewards teaches the policy to end episodes: refuse it at once."""
        shield = self.config.shield
        if not (shield.terminate and shield.cat_penalty == 0 and bool((rollout.reward < 0).any())):
            return
        raise ConfigError(
            f"shield.cat_penalty: expected > 0 with shield.terminate on task {self.task.name}, whose rewards are "
            f"negative (lowest chunk reward {float(rollout.reward.min()):.3g} in the first rollout): an episode CaT "
            "ends early then loses a negative future return, a gain the policy learns to seek. Set a penalty at "
            "least as large as an episode's worst remaining return (docs/finetuning.md, 'Under the deployment "
            "shield')")

    def _scaled_rewards(self, rollout: Rollout) -> torch.Tensor:
        """Rewards divided by the running return std, whose statistics take in every rank's envs (in global env
        order), so all ranks keep the same scaler; this rank's columns are returned."""
        info, n = self.info, rollout.reward.shape[1]
        done = rollout.terminated | rollout.truncated
        local = torch.stack([rollout.reward.double(), rollout.n_steps.double(), done.double()])
        rewards, n_steps, done_all = distributed.gather_across_ranks(local, info, self.device, dim=2)
        scaled = self.rewards.scale(rewards.to(rollout.reward.dtype), n_steps.long(), done_all.bool(),
                                    self.config.advantage.gamma)
        return scaled[:, info.rank * n:(info.rank + 1) * n]

    def _batch(self, rollout: Rollout) -> Batch:
        cfg = self.config.advantage
        with torch.no_grad():
            values = self.critic(rollout.cond).cpu()
            next_values = self.critic(rollout.next_cond).cpu()
        rewards = self._scaled_rewards(rollout) if cfg.reward_scaling else rollout.reward
        adv, returns = compute_gae(rewards, values, next_values, rollout.n_steps, rollout.terminated,
                                   rollout.truncated, cfg.gamma, cfg.gae_lambda)
        adv, returns, values = (t.flatten().to(self.device) for t in (adv, returns, values))
        if cfg.normalize:  # over all ranks' decisions
            mean, var = distributed.moments_across_ranks(adv, self.info)
            adv = ((adv - mean) / (var.sqrt() + 1e-8)).to(values.dtype)
        store = {k: v.flatten(0, 1) for k, v in rollout.store.items()}
        return Batch(rollout.cond.flatten(0, 1), store, adv, returns, values)

    def _episode_stats(self, rollout: Rollout, shield: dict[str, Any] | None) -> dict[str, Any]:
        """The iteration's episode and shield numbers over all ranks' envs."""
        eps = rollout.episodes
        counts = [rollout.env_steps, len(eps), sum(e["return"] for e in eps), sum(e["length"] for e in eps),
                  sum(e["success"] for e in eps)]
        if shield is not None:
            counts += [shield[k] for k in ("intervened", "steps", "cat_terminations", "faults")]
        total = distributed.reduce_across_ranks(counts, self.info, self.device)
        env_steps, n = int(total[0]), int(total[1])
        row = {"env_steps": env_steps, "episodes": n, "return": total[2] / n if n else None,
               "episode_length": total[3] / n if n else None,
               "success_rate": total[4] / n if n and self.task.has_success else None}
        if shield is not None:
            row.update(shield_rate=total[5] / max(total[6], 1), shield_cat_terminations=int(total[7]),
                       shield_faults=int(total[8]))
        return row

    def iteration(self, collector: Collector, iteration: int) -> dict[str, Any]:
        cfg, info = self.config, self.info
        seed_everything(cfg.seed, iteration, info.rank)  # rank 0's key is (seed, iteration): SeedSequence pads zeros
        n_envs, local = cfg.rollout.n_envs, cfg.rollout.n_envs // info.world_size
        first = (iteration - 1) * n_envs + info.rank * local  # this rank's slice of the iteration's seeds
        seeds = [(cfg.seed * 7919 + first + j) % 100_000 for j in range(local)]  # train split
        start = time.perf_counter()
        rollout = collector.collect(cfg.rollout.n_decisions, seeds)
        collected = time.perf_counter()
        self._check_cat_rewards(rollout)
        shield = None
        if self.shield is not None:
            from robopolicy.hal.shield_env import pop_shield_counts

            shield, _ = pop_shield_counts(collector.env)
        episodes = self._episode_stats(rollout, shield)
        env_steps = episodes.pop("env_steps")
        batch = self._batch(rollout)
        warming_up = iteration <= cfg.update.critic_warmup_iterations
        actor_lr = cfg.update.actor_lr_at(iteration, cfg.iterations)
        for group in self.actor_opt.param_groups:
            group["lr"] = actor_lr * group.get("lr_scale", 1.0)
        stats = ppo_update(self.algorithm, self.critic, batch, None if warming_up else self.actor_opt,
                           self.critic_opt, cfg.update, info)
        rollout_stats = self.algorithm.rollout_stats(rollout.store)
        names = sorted(rollout_stats)
        sums = distributed.reduce_across_ranks([rollout_stats[k] for k in names], info, self.device)
        end = time.perf_counter()
        row = {
            "step": iteration, "env_steps": self.progress.env_steps + env_steps, **episodes, **stats,
            "actor_lr": actor_lr,
            **{k: v / info.world_size for k, v in zip(names, sums, strict=True)},  # means over the ranks
            # this rank's times (policy time: everything in the rollout but the env calls); global throughput
            "env_steps_per_s": env_steps / (end - start), "env_time_s": rollout.env_time_s,
            "policy_time_s": collected - start - rollout.env_time_s, "update_time_s": end - collected,
        }
        self.progress.env_steps = row["env_steps"]
        return row

    def evaluate(self, env) -> tuple[float, dict[str, Any]]:
        from robopolicy.eval.protocol import EvalConfig, evaluate

        cfg = self.config.eval
        result = evaluate(self.policy, env, EvalConfig(n_episodes=cfg.n_episodes, policy_seeds=[0], split="test",
                                                        n_envs=cfg.n_envs, n_videos=0), self.task.has_success,
                          shielded=self.shield is not None)
        metric = result["success"]["rate"] if self.task.has_success else result["return"]["mean"]
        return metric, {"eval_success": result.get("success", {}).get("rate"), "eval_return": result["return"]["mean"],
                        "eval_shield_rate": result.get("shield", {}).get("rate")}

    # ---- the loop -------------------------------------------------------------------------------------------

    def fit(self) -> FinetuneResult:
        from robopolicy.sim import make_vector_env

        cfg, p, main = self.config, self.progress, self.info.is_main
        horizons = {"n_obs_steps": self.policy.config.n_obs_steps, "n_action_steps": self.policy.config.n_action_steps}
        env = make_vector_env(self.task, cfg.rollout.n_envs // self.info.world_size,
                              asynchronous=cfg.rollout.asynchronous, same_step_autoreset=True,
                              backend=cfg.rollout.vector_backend,
                              ray_workers=cfg.rollout.ray_workers, ray_address=cfg.rollout.ray_address,
                              shield=self.shield, **horizons)
        # judged under the shield, without CaT's terminations
        eval_shield = None if self.shield is None else dataclasses.replace(self.shield, cat=False)
        eval_env = make_vector_env(self.task, min(cfg.eval.n_envs, cfg.eval.n_episodes), shield=eval_shield,
                                   **horizons) if main else None
        collector = Collector(env, self.policy, self.algorithm)
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        log = RunLog(self.out_dir, p.iteration, cfg.tensorboard, COLUMNS) if main else None
        bar = tqdm(total=cfg.iterations, initial=p.iteration, desc=f"{cfg.algo} {cfg.task}", dynamic_ncols=True,
                   disable=not (main and cfg.progress))
        session_start, elapsed_before = time.perf_counter(), p.elapsed_s
        row: dict[str, Any] = {}
        try:
            for iteration in range(p.iteration + 1, cfg.iterations + 1):
                row = self.iteration(collector, iteration)
                p.iteration = iteration
                bar.update(1)
                if log is None or eval_env is None:  # ranks other than 0: no evaluation, logs or checkpoints
                    continue
                names = []
                if iteration % cfg.eval.every == 0 or iteration == cfg.iterations:
                    metric, eval_row = self.evaluate(eval_env)
                    row.update(eval_row)
                    if p.best_metric is None or metric > p.best_metric:
                        p.best_metric, p.best_iteration = metric, iteration
                        names.append(BEST)
                p.elapsed_s = row["elapsed_s"] = elapsed_before + time.perf_counter() - session_start
                log.write(row)
                bar.set_postfix({k: f"{row[k]:.3g}" for k in ("return", "success_rate", "eval_success")
                                 if row.get(k) is not None})
                if iteration % cfg.ckpt_every == 0:
                    names.append(f"step_{iteration:06d}")
                if iteration % cfg.ckpt_every == 0 or iteration == cfg.iterations:
                    names.append(LATEST)
                if names:
                    self.save(*names)
        finally:
            bar.close()
            env.close()
            if log is not None:
                log.close()
            if eval_env is not None:
                eval_env.close()
        return FinetuneResult(self.policy.eval(), self.out_dir, p, row)


def finetune(config: FinetuneConfig, checkpoint: str, resume: bool | str = "auto") -> FinetuneResult:
    """Fine-tune `checkpoint` (a policy checkpoint directory, or "scratch" for algorithms that can start from
    nothing) on `config.task` with `config.algo`. resume: as `robopolicy train`'s ("auto": continue from
    out_dir/checkpoints/latest when present; "never": start fresh, refusing an out_dir with checkpoints; a path).
    Under torchrun, every rank calls this; the result's evaluation fields (best_metric) are rank 0's only."""
    resume_from = _checkpoint_to_resume(Path(config.out_dir) / "checkpoints", resume)
    info, _ = distributed.setup(config.device)
    try:
        finetuner = Finetuner(config, checkpoint, resume_from, info)
        if info.is_main:
            write_json(finetuner.out_dir / "config.json", {"finetune": to_dict(config), "pretrained": checkpoint})
        result = finetuner.fit()
        distributed.barrier(info)  # every rank returns only once rank 0 has written its last checkpoint
        return result
    finally:
        distributed.teardown(info)
