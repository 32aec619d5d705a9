"""`robopolicy demo`: the whole stack on the fast manipulation task, end to end, on an embedded default.

Stages (each resumable, see `stages.StageRunner`): collect scripted push_puck demonstrations into zarr ->
behavior-clone a diffusion, a flow and a 1-step consistency head on one shared encoder configuration ->
fine-tune the flow head with FPO and the diffusion head with DPPO -> evaluate every policy in simulation with the
standard protocol -> deploy the best one through executor and shield on the `mujoco` backend -> write the report.
Nothing is downloaded: the task, its expert and every model are built here.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from robopolicy.pipeline.report import write_report
from robopolicy.pipeline.stages import Stage, StageRecord, StageRunner

TASK = "push_puck"
HARDWARE = "push_puck_sim"  # hardware/push_puck_sim.toml: the task's pusher as a robot, simulated in MuJoCo

# head -> head params: the sampler each head is behavior-cloned with and later deployed with.
HEAD_PARAMS: dict[str, dict[str, Any]] = {
    "diffusion": {"sampler": "ddim", "inference_steps": 5},
    "flow": {"inference_steps": 5},
    "consistency": {},
}
# head -> the fine-tuning algorithm the demo applies to it (the consistency head is shown as BC-only).
FINETUNE: dict[str, str] = {"flow": "fpo", "diffusion": "dppo"}


@dataclass
class DemoConfig:
    """Sizes of the demo; `QUICK` is the 1-2 minute version the test suite runs end to end."""

    n_demos: int = 100
    bc_steps: int = 3000
    bc_hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    finetune_iterations: int = 20
    finetune_envs: int = 16
    eval_episodes: int = 50
    eval_envs: int = 10
    deploy_episodes: int = 3
    seed: int = 0
    threads: int = 1

    def estimates(self) -> dict[str, float]:
        """Rough stage wall times (s) on this project's 2-core CPU, for the first ETA."""
        return {"collect": 0.1 * self.n_demos, "bc": 0.03 * self.bc_steps, "finetune": 6.0 * self.finetune_iterations,
                "eval": 0.1 * self.eval_episodes, "deploy": 8.0 * self.deploy_episodes, "video": 10.0,
                "report": 3.0}


QUICK = DemoConfig(n_demos=12, bc_steps=200, bc_hidden=[64, 64], finetune_iterations=1, finetune_envs=4,
                   eval_episodes=6, eval_envs=6, deploy_episodes=1)


def _policy_dict(head: str, hidden: list[int]) -> dict[str, Any]:
    from robopolicy.task import load_task

    policy = load_task(TASK).run_config_dict()["policy"]
    # low-dim task: an MLP trains in minutes; the residual FiLM one tells the two ways round the puck apart
    policy["backbone"] = {"kind": "residual_mlp", "hidden_dims": list(hidden)}
    policy["n_action_steps"] = 4  # 4 of 16 run: 50 % vs 34 % for 8 (8 k-step diffusion policy); the RL recipes' chunk
    policy["head"] = {"name": head, "params": HEAD_PARAMS[head]}
    return policy


def collect_stage(out: Path, config: DemoConfig) -> StageRecord:
    from robopolicy.sim.collect import Recipe, collect

    dataset = out / "data" / f"{TASK}_demos.zarr"
    shutil.rmtree(dataset, ignore_errors=True)  # a half-finished earlier attempt
    recipe = Recipe(name="demo", task=TASK, output=str(dataset), n_episodes=config.n_demos, expert=TASK,
                    seed_start=config.seed, description="robopolicy demo: scripted push_puck demonstrations")
    report = collect(recipe)
    return {"dataset": str(dataset), "episodes": report["kept"], "expert_success": report.get("success_rate")}


def bc_stage(out: Path, config: DemoConfig, head: str, done: dict[str, StageRecord]) -> StageRecord:
    from robopolicy.specs import RunConfig, from_dict
    from robopolicy.train.trainer import train

    steps = config.bc_steps
    run = from_dict(RunConfig, {
        "policy": _policy_dict(head, config.bc_hidden),
        "train": {"dataset": done["collect"]["dataset"], "out_dir": str(out / "runs" / f"bc_{head}"), "steps": steps,
                  "batch_size": 256, "lr": 1e-3, "warmup_steps": max(1, steps // 20), "seed": config.seed,
                  "log_every": max(1, steps // 20), "val_every": steps, "ckpt_every": max(1, steps // 4),
                  "progress": True},
    }, "demo")
    result = train(run, resume="auto")  # a killed BC stage continues from its last checkpoint
    return {"checkpoint": str(result.checkpoints / "latest"), "log": str(Path(run.train.out_dir) / "log.csv"),
            "steps": result.step, "final_loss": result.final_loss}


def finetune_stage(out: Path, config: DemoConfig, head: str, algo: str, done: dict[str, StageRecord]) -> StageRecord:
    """The built-in push_puck recipe of `algo`, sized by `config`; resumes a killed run from its last checkpoint."""
    from robopolicy.rl.config import load_finetune_config
    from robopolicy.rl.finetune import finetune

    iterations = config.finetune_iterations
    ft_config = load_finetune_config(f"{TASK}_{algo}", [
        f"rollout.n_envs={config.finetune_envs}", f"eval.every={iterations}", f"eval.n_envs={config.eval_envs}",
        f"eval.n_episodes={config.eval_envs}", f"ckpt_every={max(1, iterations // 3)}",
    ], out_dir=str(out / "runs" / f"ft_{head}_{algo}"), iterations=iterations, seed=config.seed)
    result = finetune(ft_config, done[f"bc_{head}"]["checkpoint"], resume="auto")
    return {"checkpoint": str(result.checkpoints / "latest"), "log": str(result.out_dir / "log.csv"),
            "env_steps": result.progress.env_steps, "algo": algo}


def deploy_stage(out: Path, config: DemoConfig, done: dict[str, StageRecord]) -> StageRecord:
    """The best policy through executor and shield on the mujoco backend hosting push_puck's scene, unattended
    (the simulated scene resets itself to each seed and reports success)."""
    from robopolicy.eval.hardware import evaluate_on_hardware
    from robopolicy.eval.protocol import EvalConfig

    name = best_policy(done)
    checkpoint = done[f"eval_{name}"]["checkpoint"]
    eval_config = EvalConfig(n_episodes=config.deploy_episodes, policy_seeds=[config.seed], n_envs=1, n_videos=0)
    result = evaluate_on_hardware(checkpoint, HARDWARE, eval_config, out / "deploy")
    shield = result["shield"]
    return {"policy": name, "checkpoint": checkpoint, "hardware": HARDWARE, "episodes": result["n_episodes"],
            "success_rate": result["success"]["rate"], "steps": shield["steps"], "interventions": shield["intervened"],
            "interventions_per_step": shield["rate"], "aborted": result.get("aborted"),
            "result": str(out / "deploy" / "result.json")}


def eval_stage(out: Path, config: DemoConfig, name: str, checkpoint: str) -> StageRecord:
    from robopolicy.eval.protocol import EvalConfig
    from robopolicy.eval.run import evaluate_checkpoint

    eval_config = EvalConfig(n_episodes=config.eval_episodes, policy_seeds=[config.seed], n_envs=config.eval_envs,
                             n_videos=0)
    result = evaluate_checkpoint(checkpoint, TASK, eval_config, out / "eval" / name)
    return {"checkpoint": checkpoint, "success": result["success"], "return": result["return"]["mean"],
            "latency_ms_p50": result["latency_ms"]["per_call_p50"], "result": str(out / "eval" / name / "result.json")}


def best_policy(done: dict[str, StageRecord]) -> str:
    """The evaluated policy with the highest success rate (ties: the later, i.e. fine-tuned, one)."""
    evals = [(record["success"]["rate"], i, name[len("eval_"):]) for i, (name, record) in enumerate(done.items())
             if name.startswith("eval_")]
    return max(evals)[2]


def video_stage(out: Path, config: DemoConfig, done: dict[str, StageRecord]) -> StageRecord:
    """One recorded rollout of the best policy (rendering costs far more than simulating, so only one)."""
    from robopolicy.eval.protocol import EvalConfig
    from robopolicy.eval.run import evaluate_checkpoint

    name = best_policy(done)
    checkpoint = done[f"eval_{name}"]["checkpoint"]
    eval_config = EvalConfig(n_episodes=1, policy_seeds=[config.seed], n_envs=1, n_videos=1)
    result = evaluate_checkpoint(checkpoint, TASK, eval_config, out / "eval" / f"video_{name}", video_every=2)
    return {"policy": name, "videos": result["videos"]}


def build_stages(out: Path, config: DemoConfig) -> list[Stage]:
    est = config.estimates()
    stages = [Stage("collect", f"{config.n_demos} scripted {TASK} demonstrations -> zarr",
                    lambda done: collect_stage(out, config), est["collect"])]
    for head in HEAD_PARAMS:
        stages.append(Stage(f"bc_{head}", f"behavior-clone the {head} head ({config.bc_steps} steps)",
                            lambda done, h=head: bc_stage(out, config, h, done), est["bc"]))
    for head, algo in FINETUNE.items():
        stages.append(Stage(f"finetune_{head}_{algo}",
                            f"fine-tune BC {head} with {algo.upper()} ({config.finetune_iterations} iterations)",
                            lambda done, h=head, a=algo: finetune_stage(out, config, h, a, done), est["finetune"]))
    for head in HEAD_PARAMS:
        stages.append(Stage(f"eval_bc_{head}", f"evaluate BC {head} on {config.eval_episodes} held-out seeds",
                            lambda done, h=head: eval_stage(out, config, f"bc_{h}", done[f"bc_{h}"]["checkpoint"]),
                            est["eval"]))
    for head, algo in FINETUNE.items():
        stages.append(Stage(f"eval_ft_{head}_{algo}", f"evaluate {algo.upper()}-fine-tuned {head}",
                            lambda done, h=head, a=algo: eval_stage(out, config, f"ft_{h}_{a}",
                                                                    done[f"finetune_{h}_{a}"]["checkpoint"]),
                            est["eval"]))
    stages.append(Stage("deploy", f"deploy the best policy through executor and shield on {HARDWARE} "
                                  f"({config.deploy_episodes} episodes)",
                        lambda done: deploy_stage(out, config, done), est["deploy"]))
    stages.append(Stage("video", "record one rollout of the best policy",
                        lambda done: video_stage(out, config, done), est["video"]))
    stages.append(Stage("report", "write report.md, results.json, plots and the rollout video",
                        lambda done: write_report(out, asdict(config), done), est["report"]))
    return stages


def run_demo(out: Path, config: DemoConfig, fresh: bool = False) -> dict[str, StageRecord]:
    import torch

    from robopolicy.sim.rendering import select_gl_backend

    select_gl_backend()  # before anything imports mujoco: the video and the shield's shadow model need it
    torch.set_num_threads(config.threads)
    out = out.resolve()  # the stage records hold paths; keep them valid from any working directory
    return StageRunner(out, build_stages(out, config), fresh=fresh).run()
