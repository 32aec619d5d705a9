"""``robopolicy tasks`` and ``robopolicy collect`` (``robopolicy ppo`` trains experts in ``robopolicy.rl.cli``)."""

from __future__ import annotations

import argparse
import json


def _tasks(args: argparse.Namespace) -> int:
    from robopolicy.task import list_tasks, load_task

    for name in list_tasks():
        task = load_task(name)
        if args.verbose:
            obs = ", ".join(f"{o.key}:{o.kind}{list(o.shape)}" for o in task.obs)
            h = task.horizons
            print(f"{name}\n  env: {task.env.backend} {task.env.id} {task.env.kwargs}\n  obs: {obs}\n"
                  f"  action: {task.action.dim}-d {task.action.convention}: {task.action_description}\n"
                  f"  episode: {task.max_episode_steps} steps; "
                  f"success: {task.success.description or task.success.type}\n"
                  f"  horizons: n_obs_steps={h.n_obs_steps} horizon={h.horizon} n_action_steps={h.n_action_steps}; "
                  f"expert: {task.expert.name or '-'}; fast: {task.fast}")
        else:
            print(f"{name:16s} {task.env.backend:9s} {task.env.id:18s} {'fast' if task.fast else 'slow'}  "
                  f"{task.description.split(':')[0]}")
    return 0


def _collect(args: argparse.Namespace) -> int:
    from robopolicy.sim.collect import collect, load_recipe
    from robopolicy.task import load_task

    recipe = load_recipe(args.recipe)
    if args.episodes is not None:
        recipe.n_episodes = args.episodes
    report = collect(recipe, args.output)
    print(json.dumps({k: v for k, v in report.items() if k != "recipe"}, indent=1))
    outcome = (f"expert success rate: {report['success_rate']:.1%}" if load_task(recipe.task).has_success
               else f"expert mean return: {report['mean_return']:.1f}")  # locomotion has no success notion
    print(f"{outcome} over {report['attempts']} attempts; kept {report['kept']} episodes in {report['output']}")
    return 0 if report["kept"] == recipe.n_episodes else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("tasks", help="list the tasks in tasks/*.toml",
                              description="List every task file: simulator, environment id and whether it is fast.")
    p.add_argument("-v", "--verbose", action="store_true", help="show observation keys, action, horizons and success")
    p.set_defaults(func=_tasks)

    p = subparsers.add_parser(
        "collect", help="collect demonstrations from a datasets/*.toml recipe",
        description=(
            "Run a recipe's expert on train seeds (0..) until N episodes are kept and write the dataset. Fast tasks "
            "write zarr directly; robosuite tasks record robosuite's raw demo.hdf5, rebuild observations from the "
            "states and convert to zarr. Prints the expert's success rate; exits 1 if too few episodes succeeded."
        ),
    )
    p.add_argument("recipe", help="recipe name in datasets/ (e.g. push_puck_proficient) or a TOML path")
    p.add_argument("--episodes", type=int, help="override the recipe's episode count")
    p.add_argument("--output", help="override the recipe's output path")
    p.set_defaults(func=_collect)
