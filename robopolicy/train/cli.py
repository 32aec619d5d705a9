"""`robopolicy train CONFIG.toml [--set key=value ...] [--resume auto|never|PATH] [--out DIR]`."""

from __future__ import annotations

import argparse
import os
from importlib import resources
from pathlib import Path

from robopolicy.specs import ConfigError, RunConfig, apply_overrides, from_dict, load_run_config

RECIPES = resources.files("robopolicy.train") / "recipes"
TASK_PREFIX = "task:"

EPILOG = """\
CONFIG is a TOML recipe with a [policy] and a [train] table, the name of a built-in recipe
({names}), or task:NAME for the default recipe of tasks/NAME.toml (its specs and horizons filled in).
Every field is documented in robopolicy/specs.py (PolicyConfig, TrainConfig); unknown
or mistyped fields are rejected with their name.

examples:
  robopolicy train toy_bimodal --out runs/toy
  robopolicy train recipe.toml --set train.steps=5000 --set policy.head.name=flow
  robopolicy train task:lift                          # tasks/lift.toml's [recipe]
  torchrun --nproc_per_node=4 -m robopolicy.cli train recipe.toml     # DDP; train.batch_size is global

outputs in train.out_dir: checkpoints/{{step_000500,latest,best}}, log.csv, tb/ (tensorboard), config.json.
A run started again with the same out_dir resumes from checkpoints/latest (--resume auto).

example recipe ({example}):

{text}"""


def recipe_names() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in RECIPES.iterdir() if p.name.endswith(".toml"))


def resolve_config(name: str) -> Path:
    """A recipe path as given, or a built-in recipe by name."""
    path = Path(name)
    if path.exists() or name.endswith(".toml"):
        return path
    if name in recipe_names():
        return Path(str(RECIPES / f"{name}.toml"))
    raise ConfigError(f"{name}: no such file, and not a built-in recipe (one of {recipe_names()})")


def load_config(name: str, overrides: list[str]) -> RunConfig:
    """A recipe file, a built-in recipe, or (``task:NAME``) a task file's default recipe, with overrides."""
    if not name.startswith(TASK_PREFIX):
        return load_run_config(resolve_config(name), overrides)
    from robopolicy.task import load_task

    task_name = name[len(TASK_PREFIX):]
    try:
        return from_dict(RunConfig, apply_overrides(load_task(task_name).run_config_dict(), overrides))
    except ConfigError as exc:
        raise ConfigError(f"task {task_name} [recipe]: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    if args.out:
        config.train.out_dir = args.out
    from robopolicy.train.trainer import train  # torch is imported only when a run starts

    result = train(config, resume=args.resume)
    if int(os.environ.get("RANK", 0)) == 0:
        best = "" if result.best_step is None else f"; best {result.best_metric:.4g} at step {result.best_step}"
        print(f"trained {result.step} steps (final loss {result.final_loss:.4g}{best}); "
              f"checkpoints in {result.checkpoints}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    example = RECIPES / "toy_bimodal.toml"
    p = subparsers.add_parser(
        "train", help="behavior cloning from a TOML recipe (resumable, DDP with torchrun)",
        description="Train a policy by behavior cloning: AdamW, warmup + cosine LR, EMA weights, periodic/latest/best "
                    "checkpoints, exact resume, CSV and tensorboard logs.",
        epilog=EPILOG.format(names=", ".join(recipe_names()), example=example, text=example.read_text()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", metavar="CONFIG.toml", help="recipe path, built-in recipe name or task:NAME")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field with a TOML value, e.g. train.lr=3e-4 (repeatable)")
    p.add_argument("--resume", default="auto", metavar="auto|never|PATH",
                   help="auto (default): continue from OUT/checkpoints/latest if present; never: start fresh "
                        "(refuses an out_dir with checkpoints); PATH: continue from that checkpoint")
    p.add_argument("--out", metavar="DIR", help="output directory (overrides train.out_dir)")
    p.set_defaults(func=run)
