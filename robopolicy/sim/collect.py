"""Demonstration collection from ``datasets/*.toml`` recipes.

Fast tasks write a zarr ``ReplayBuffer`` directly (with the simulator ``states``, so observations can be
replayed later). robosuite tasks go the way real robosuite data goes: episodes are recorded through
robosuite's ``DataCollectionWrapper`` and gathered into its raw ``demo.hdf5`` (states + actions), and
observations are rebuilt by replaying the states (``robopolicy.data.regenerate``, robomimic's
``dataset_states_to_obs``, optionally in an image variant of the task) into the zarr store.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from robopolicy.atomic import write_json
from robopolicy.episodes import EpisodeTally, Finished
from robopolicy.sim.factory import make_base_env
from robopolicy.specs import from_dict
from robopolicy.task import TaskSpec, load_task

DATASETS_DIR = Path(__file__).resolve().parents[2] / "datasets"


@dataclass
class Recipe:
    """One ``datasets/<name>.toml``. ``expert`` is a scripted expert name or ``ppo`` (then ``checkpoint``
    is the PPO run directory); ``obs_task`` chooses the observation variant stored (default: ``task``)."""

    name: str
    task: str
    output: str
    n_episodes: int
    expert: str
    description: str = ""
    expert_kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: str = ""
    obs_task: str = ""
    seed_start: int = 0
    only_successful: bool = True
    max_attempts_factor: float = 2.0


def load_recipe(name_or_path: str | Path) -> Recipe:
    path = Path(name_or_path)
    if not (path.suffix == ".toml" and path.exists()):
        path = DATASETS_DIR / f"{name_or_path}.toml"
    with open(path, "rb") as f:
        return from_dict(Recipe, tomllib.load(f))


def _expert(recipe: Recipe, task: TaskSpec):
    if recipe.expert == "ppo":
        from robopolicy.sim.experts.ppo_agent import PPOExpert

        return PPOExpert.load(recipe.checkpoint, **recipe.expert_kwargs)
    from robopolicy.sim.experts import make_expert

    return make_expert(recipe.expert, **{**task.expert.kwargs, **recipe.expert_kwargs})


def _rollout(env, expert, seed: int, keys: list[str]) -> tuple[dict[str, np.ndarray], Finished]:
    """One episode on its own seeded reset (see `robopolicy.episodes` for why collection keeps its own loop);
    returns per-step observations (before each action), actions and rewards, the simulator ``states`` at each
    observation where the env can record them (observations can be replayed), and the episode's tally."""
    obs, _ = env.reset(seed=seed)
    expert.reset(seed=seed)
    sim = env.unwrapped if hasattr(env.unwrapped, "get_state") else None
    steps: dict[str, list] = {k: [] for k in [*keys, "action", "reward", *(["states"] if sim else [])]}
    tally, finished = EpisodeTally(1), []
    while not finished:
        action = np.asarray(expert.act(obs), dtype=np.float32)
        for k in keys:
            steps[k].append(obs[k])
        if sim is not None:
            steps["states"].append(sim.get_state())
        steps["action"].append(action)
        obs, reward, terminated, truncated, info = env.step(action)
        steps["reward"].append(np.float32(reward))
        finished = tally.add(steps["reward"][-1:], [1], [info.get("is_success", False)], [terminated or truncated])
    return {k: np.stack(v) for k, v in steps.items()}, finished[0]


def _episodes(recipe: Recipe, task: TaskSpec, env, keys: list[str], on_episode) -> dict[str, Any]:
    """Run the expert on consecutive train seeds until ``n_episodes`` are kept; return the tallies."""
    expert = _expert(recipe, task)
    kept, attempts, successes, returns = 0, 0, 0, []
    max_attempts = int(recipe.n_episodes * recipe.max_attempts_factor)
    bar = tqdm(total=recipe.n_episodes, desc=f"collect {recipe.name}", unit="ep")
    while kept < recipe.n_episodes and attempts < max_attempts:
        episode, ended = _rollout(env, expert, recipe.seed_start + attempts, keys)
        attempts += 1
        successes += ended.success
        returns.append(ended.ret)
        if ended.success or not recipe.only_successful:
            on_episode(episode, ended.success)
            kept += 1
            bar.update(1)
        bar.set_postfix(success=f"{successes / attempts:.1%}")
    bar.close()
    return {"attempts": attempts, "successes": successes, "kept": kept,
            "success_rate": successes / max(attempts, 1),
            "mean_return": float(np.mean(returns)) if returns else None}  # D4RL datasets are graded by return


def collect_zarr(recipe: Recipe, task: TaskSpec, out: Path) -> dict[str, Any]:
    """Fast path: roll the expert out and append every kept episode to a zarr store."""
    from robopolicy.data.replay_buffer import ReplayBuffer
    from robopolicy.data.spec import build_attrs

    env = make_base_env(task)
    keys = task.obs_keys
    buffer = ReplayBuffer.create(out, attrs={"recipe": asdict(recipe)}, overwrite=True)

    def add(episode: dict[str, np.ndarray], _: bool) -> None:
        if buffer.n_episodes == 0:
            buffer.update_attrs(build_attrs(
                episode, keys, fps=task.video.fps, convention={"mode": task.action.convention, "rotation": "none"},
                source={"format": "robopolicy.collect", "task": task.name, "expert": recipe.expert},
            ))
        buffer.add_episode(episode)

    with buffer:
        tally = _episodes(recipe, task, env, keys, add)
    env.close()
    return tally


def gather_robosuite_hdf5(episode_dirs: list[Path], out: Path, env_name: str, env_info: dict[str, Any]) -> int:
    """robosuite's ``gather_demonstrations_as_hdf5``, in seed order: successful episodes only, the state
    recorded after the last action dropped, 1-indexed ``demo_k`` groups with the model XML."""
    import h5py
    import robosuite

    n = 0
    with h5py.File(out, "w") as f:
        data = f.create_group("data")
        for ep_dir in episode_dirs:
            states, actions, success = [], [], False
            for state_file in sorted(ep_dir.glob("state_*.npz")):
                chunk = np.load(state_file, allow_pickle=True)  # robosuite's own npz holds action dicts
                states.extend(chunk["states"])
                actions.extend(info["actions"] for info in chunk["action_infos"])
                success = success or bool(chunk["successful"])
            if not success or not states:
                continue
            n += 1
            demo = data.create_group(f"demo_{n}")
            demo.attrs["model_file"] = (ep_dir / "model.xml").read_text()
            demo.create_dataset("states", data=np.array(states[:-1]))
            demo.create_dataset("actions", data=np.array(actions))
        data.attrs["repository_version"] = robosuite.__version__
        data.attrs["env"] = env_name
        data.attrs["env_info"] = json.dumps(env_info)
    return n


def collect_robosuite(recipe: Recipe, task: TaskSpec, out: Path) -> dict[str, Any]:
    """robosuite path: record raw demos, gather ``demo.hdf5``, rebuild observations from its states into zarr."""
    from robopolicy.data.regenerate import regenerate
    from robopolicy.sim.state_obs import StateObserver

    work = out.with_suffix(".raw")
    shutil.rmtree(work, ignore_errors=True)
    episodes_dir = work / "episodes"
    env = make_base_env(task, collect_dir=str(episodes_dir), render_mode=None)
    with contextlib.redirect_stdout(io.StringIO()):  # the wrapper prints a line per episode
        tally = _episodes(recipe, task, env, task.obs_keys, lambda *_: None)
        env.close()
    raw = work / "demo.hdf5"
    from robosuite import load_composite_controller_config

    robot = task.env.kwargs.get("robots", "Panda")
    info = {"env_name": task.env.id, "task": task.name, **task.env.kwargs,
            "controller_configs": load_composite_controller_config(robot=robot)}
    gather_robosuite_hdf5(sorted(episodes_dir.iterdir()), raw, task.env.id, info)
    observer = StateObserver(load_task(recipe.obs_task) if recipe.obs_task else task)
    try:
        *_, replay = regenerate(raw, out, observer, overwrite=True, provenance={"replayed_with": observer.versions})
    finally:
        observer.close()
    tally["raw_hdf5"] = str(raw)
    tally["replay"] = replay.as_dict()
    return tally


def collect(recipe: Recipe, output: str | None = None) -> dict[str, Any]:
    """Run a recipe; writes the dataset and ``<output>.report.json`` and returns the report."""
    task = load_task(recipe.task)
    out = Path(output or recipe.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if task.env.backend == "robosuite":
        tally = collect_robosuite(recipe, task, out)
    else:
        tally = collect_zarr(recipe, task, out)
    report = {"recipe": asdict(recipe), "output": str(out), **tally}
    write_json(f"{out}.report.json", report, indent=1)
    return report
