"""Evaluate a checkpoint (or a task's scripted expert) on a simulated task and write the report:
``result.json`` (every number), ``summary.png`` and ``videos/seed<k>.mp4`` for the first test seeds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from robopolicy.atomic import write_json
from robopolicy.eval.plots import plot_summary
from robopolicy.eval.protocol import ChunkPolicy, EvalConfig, evaluate

if TYPE_CHECKING:
    from robopolicy.hal.shield_env import EnvShield

EXPERT = "expert"


COMPILE_MODES = ("none", "torch", "aot")


def load_eval_policy(checkpoint: str, task, device: str = "cpu", compile_mode: str = "none",
                     aot_cache: str | None = None, **expert_kwargs: Any) -> ChunkPolicy:
    """``expert`` names the task's scripted expert; anything else is a ``Policy`` checkpoint directory.

    ``compile_mode``: "torch" (``Policy.compile()``) or "aot" (``Policy.compile(ahead_of_time=True)``, packages kept
    in ``aot_cache`` when given), so the evaluation runs, and times, inference as a deployment would.
    """
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {compile_mode!r}")
    if checkpoint == EXPERT:
        if compile_mode != "none":
            raise ValueError(f"compile mode {compile_mode!r} applies to policy checkpoints, not to the expert")
        from robopolicy.sim.experts import make_expert
        from robopolicy.sim.experts.adapter import ExpertPolicy

        if not task.expert.name or task.expert.name == "ppo":
            raise ValueError(f"task {task.name} has no scripted expert; pass a checkpoint directory")
        kwargs = {**task.expert.kwargs, **expert_kwargs}
        return ExpertPolicy(lambda: make_expert(task.expert.name, **kwargs))
    from robopolicy.policy import Policy

    policy = Policy.load(checkpoint, device=device)
    if compile_mode == "none":
        return policy.eval()
    return policy.compile(ahead_of_time=compile_mode == "aot", cache_dir=aot_cache)


def evaluate_checkpoint(
    checkpoint: str, task_name: str, config: EvalConfig, out_dir: str | Path, asynchronous: bool = False,
    device: str = "cpu", video_every: int = 1, compile_mode: str = "none", aot_cache: str | None = None,
    shield: EnvShield | None = None, **expert_kwargs: Any,
) -> dict[str, Any]:
    """Build the vector env with the policy's horizons, run the protocol and write the report files.
    ``shield``: every env's actions go through it (``robopolicy.hal.shield_env.env_shield``); counts in ``shield``."""
    from robopolicy.sim import make_vector_env
    from robopolicy.task import load_task

    task = load_task(task_name)
    policy = load_eval_policy(checkpoint, task, device, compile_mode, aot_cache, **expert_kwargs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = make_vector_env(
        task, min(config.n_envs, config.n_episodes), asynchronous=asynchronous,
        n_obs_steps=policy.config.n_obs_steps, n_action_steps=policy.config.n_action_steps,
        video_dir=out_dir / "videos", video_seeds=config.env_seeds[: config.n_videos], video_every=video_every,
        shield=shield,
    )
    try:
        result = evaluate(policy, env, config, has_success=task.has_success, shielded=shield is not None)
    finally:
        env.close()
    result.update(task=task.name, checkpoint=checkpoint, videos=sorted(str(p) for p in (out_dir / "videos").glob("*")))
    if shield is not None:
        result["shield"]["hardware"] = shield.hardware
    write_json(out_dir / "result.json", result, indent=1)
    plot_summary(result, out_dir / "summary.png", f"{task.name}: {checkpoint}")
    return result
