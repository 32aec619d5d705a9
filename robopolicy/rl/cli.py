"""`robopolicy finetune CHECKPOINT --task TASK [--algo NAME] [--recipe R] [--set key=value ...] [--out DIR]
[--resume auto|never|PATH] [--device D] [--shield HARDWARE [--shield-terminate]]`, and `robopolicy ppo` (the
locomotion experts)."""

from __future__ import annotations

import argparse
import json
import os

from robopolicy.rl.registry import describe_algorithms

EPILOG = """\
algorithms (--algo):
{algorithms}

CHECKPOINT is a policy checkpoint directory (e.g. runs/bc/checkpoints/best), or "scratch" for algorithms that
start from a fresh policy (ppo). The recipe (--recipe, a built-in name from robopolicy/rl/recipes or a TOML
path) sets the run; every field is documented in robopolicy/rl/config.py (FinetuneConfig) and, under
[params], in the algorithm's Params (robopolicy/rl/dppo.py, gaussian.py, ...). Unknown fields are rejected.
A recipe may start from another one (`base = "NAME"`) and state only what differs.
Without --recipe, the built-in recipe TASK_ALGO is used when it exists (built-in: {recipes}).

examples:
  robopolicy finetune runs/bc_push/checkpoints/best --task push_puck --algo dppo --out runs/dppo_push
  robopolicy finetune scratch --task push_puck --algo ppo --set iterations=50
  robopolicy finetune CKPT --task push_puck --set params.finetune_steps=1 --set update.target_kl=1.0
  robopolicy finetune CKPT --task push_puck --shield hardware/push_puck_sim.toml --shield-terminate
  torchrun --standalone --nproc_per_node=4 -m robopolicy.cli finetune CKPT --task push_puck --out runs/dppo_4
      # data-parallel learner (docs/distributed.md): rollout.n_envs and update.minibatch_size are global

--shield HARDWARE puts that robot's deployment shield (robopolicy/hal/shield_env.py) around every rollout and
evaluation env, so the policy learns and is judged under it; its commands must be the task's actions (a
mismatch exits 2 naming the key). log.csv gains shield_rate (fraction of rollout steps the shield corrected),
shield_cat_terminations, shield_faults and eval_shield_rate. --shield-terminate adds CaT (constraints as
terminations) to the rollouts: a corrected step ends the episode with probability min(1, correction /
shield.cat_scale), that step's reward lowered by shield.cat_penalty; on a task with negative rewards
(push_puck) ending early would be a gain, so there CaT needs --set shield.cat_penalty=P > 0 (e.g. 50, an
episode's worst remaining return) and stops with exit code 2 without it. Both set config fields
(shield.hardware, shield.terminate; shield.options.* takes the deploy shield's options, e.g. --set
shield.options.collision=false), so config.json records them.

outputs in --out: checkpoints/{{step_000010,latest,best}} (policy checkpoints that `robopolicy eval` and
Policy.load read unchanged; best = highest held-out eval success), log.csv, tb/, config.json. A run started
again with the same --out resumes exactly from checkpoints/latest (--resume auto)."""


def run(args: argparse.Namespace) -> int:
    from robopolicy.rl.config import load_finetune_config, recipe_names

    recipe = args.recipe
    if recipe is None and f"{args.task}_{args.algo or 'dppo'}" in recipe_names():
        recipe = f"{args.task}_{args.algo or 'dppo'}"
    shield = [f"shield.hardware={json.dumps(args.shield)}"] if args.shield else []
    shield += ["shield.terminate=true"] if args.shield_terminate else []
    config = load_finetune_config(recipe, shield + args.overrides, task=args.task, algo=args.algo, out_dir=args.out,
                                  device=args.device)
    from robopolicy.rl.finetune import finetune  # torch and the simulators load only when a run starts

    result = finetune(config, args.checkpoint, resume=args.resume)
    if int(os.environ.get("RANK", 0)) != 0:  # under torchrun, rank 0 reports (it alone evaluates)
        return 0
    p = result.progress
    best = "" if p.best_iteration is None else f"; best eval {p.best_metric:.3g} at iteration {p.best_iteration}"
    print(f"fine-tuned {p.iteration} iterations ({p.env_steps} env steps){best}; checkpoints in {result.checkpoints}")
    return 0


def _ppo(args: argparse.Namespace) -> int:
    import torch

    from robopolicy.rl.ppo import PPOConfig, train

    torch.set_num_threads(args.threads)  # 64-unit MLPs: extra threads only spin and contend with the envs
    levels = dict(level.split("=") for level in args.level)
    config = PPOConfig(task=args.task, total_steps=args.steps, n_envs=args.n_envs, seed=args.seed,
                       levels={k: float(v) for k, v in levels.items()})
    log = train(config, args.out)
    print(json.dumps({"final_mean_return_20": log["updates"][-1]["mean_return_20"], "levels": log["levels"]}, indent=1))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from robopolicy.rl.config import recipe_names

    p = subparsers.add_parser(
        "finetune", help="RL fine-tuning of a policy checkpoint in simulation (DPPO, Gaussian PPO, ...)",
        description="Fine-tune a policy with policy-gradient RL on a task's vector envs: chunked rollouts, GAE "
                    "over decisions, a critic on the encoder's features, PPO updates; exact resume, CSV and "
                    "tensorboard logs, held-out evaluation and best/latest checkpoints.",
        epilog=EPILOG.format(algorithms=describe_algorithms(), recipes=", ".join(recipe_names())),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="policy checkpoint directory, or 'scratch'")
    p.add_argument("--task", required=True, help="task name (tasks/NAME.toml) or path")
    p.add_argument("--algo", default=None, help="fine-tuning algorithm (default: the recipe's, else dppo)")
    p.add_argument("--recipe", default=None, help="built-in recipe name or TOML path (default: TASK_ALGO if built in)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field with a TOML value, e.g. update.actor_lr=3e-5 (repeatable)")
    p.add_argument("--out", default=None, metavar="DIR", help="output directory (overrides out_dir)")
    p.add_argument("--resume", default="auto", metavar="auto|never|PATH",
                   help="auto (default): continue from OUT/checkpoints/latest if present; never: start fresh; "
                        "PATH: continue from that checkpoint")
    p.add_argument("--device", default=None, help="policy/critic/update device: auto (default), cpu, cuda")
    p.add_argument("--shield", default=None, metavar="HARDWARE",
                   help="hardware name or TOML path: every env's actions go through that robot's shield "
                        "(sets shield.hardware; see below)")
    p.add_argument("--shield-terminate", action="store_true",
                   help="CaT: a step the shield corrects may end the rollout episode (sets shield.terminate)")
    p.set_defaults(func=run)

    p = subparsers.add_parser(
        "ppo", help="train the Gaussian PPO locomotion expert on a gymnasium task",
        description=(
            "CleanRL-style PPO with a Gaussian policy. Saves <out>/final and, for each --level NAME=RETURN, a snapshot "
            "<out>/NAME the first time the mean return of the last 20 episodes reaches RETURN (D4RL-style 'medium' "
            "and 'expert' policies for `robopolicy collect` recipes with expert = \"ppo\")."
        ),
    )
    p.add_argument("--task", required=True, help="a gymnasium task with a 'state' observation (hopper, walker2d, ...)")
    p.add_argument("--steps", type=int, default=1_000_000, help="environment steps (default 1e6)")
    p.add_argument("--n-envs", type=int, default=8, help="parallel environments (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: fastest for small MLPs)")
    p.add_argument("--level", action="append", default=[], metavar="NAME=RETURN",
                   help="save a snapshot when the return reaches RETURN, e.g. medium=1000 (repeatable)")
    p.add_argument("--out", default="runs/ppo", help="output directory (default runs/ppo)")
    p.set_defaults(func=_ppo)
