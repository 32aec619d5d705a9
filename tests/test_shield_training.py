"""The deployment shield around simulated training and evaluation envs (`finetune --shield`, `eval --shield`):
every env of the vector env is shielded through `make_env(..., shield=...)`, the fine-tuning log carries the
per-iteration intervention rate (and CaT terminations), the eval report counts interventions per evaluated
episode, a run resumes exactly under the shield, and a hardware file that does not fit the task exits 2 naming
the file, the key and the expected value."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from robopolicy.cli import main
from robopolicy.hal.shield.hardware import ShieldOptions
from robopolicy.hal.shield_env import env_shield, pop_shield_counts
from robopolicy.rl.finetune import TIMING_COLUMNS, finetune
from robopolicy.sim import make_vector_env
from robopolicy.specs import ConfigError
from robopolicy.task import load_task
from robopolicy.train.runlog import read_log
from tests.test_rl_finetune import tiny_config, tiny_policy

HARDWARE = Path(__file__).resolve().parents[1] / "hardware" / "push_puck_sim.toml"
ASSET = HARDWARE.parent.parent / "robopolicy" / "sim" / "assets" / "push_puck.xml"
TASK = load_task("push_puck")


def hardware_file(tmp_path: Path, name: str = "tight", **replace: str) -> Path:
    """push_puck_sim.toml with the model path made absolute and ``replace``'s values swapped in (keys as
    ``section__key`` for a table's, e.g. ``limits__velocity``)."""
    lines, section = [], ""
    for line in HARDWARE.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]") + "__"
        key = section + line.split("=")[0].strip()
        if key == "mjcf":
            line = f'mjcf = "{ASSET}"'
        elif key in replace:
            line = f"{key.split('__')[-1]} = {replace[key]}"
        lines.append(line)
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def tight(tmp_path: Path) -> Path:
    """A pusher allowed 0.05 m/s: any policy that moves it at a usual pace is corrected."""
    return hardware_file(tmp_path, limits__velocity="[0.05, 0.05]")


@pytest.fixture
def checkpoint(tmp_path):
    return str(tiny_policy().save(tmp_path / "bc"))


def test_every_env_of_the_vector_env_is_shielded_and_counted(tmp_path):
    shield = env_shield(str(tight(tmp_path)), TASK, ShieldOptions(collision=False))
    assert pickle.loads(pickle.dumps(shield)) == shield  # async and Ray workers build their own
    env = make_vector_env(TASK, 3, shield=shield, n_obs_steps=2, n_action_steps=4, same_step_autoreset=True)
    try:
        env.reset(seed=[0, 1, 2])
        far = np.broadcast_to(np.array([0.2, -0.2]), (3, 4, 2))  # 0.2 m jumps: far beyond 0.05 m/s x 0.05 s
        for _ in range(3):
            env.step(far)
        assert len(env.call("pop_shield_counts")) == 3  # one shield per env; cleared
        env.reset(seed=[0, 1, 2])
        for _ in range(2):
            env.step(far)
        totals, finished = pop_shield_counts(env)
    finally:
        env.close()
    assert totals["steps"] == 3 * 2 * 4 and totals["intervened"] == totals["steps"] and totals["rate"] == 1.0
    assert totals["by_stage"]["velocity"] == totals["steps"] and finished == []  # no episode ended


def test_finetune_logs_the_shield_rate_and_resumes_exactly(tmp_path, checkpoint):
    hardware = tight(tmp_path)

    def run(out: str, iterations: int) -> list[dict]:
        sets = [f"iterations={iterations}", "ckpt_every=1", "tensorboard=false", "progress=false",
                "rollout.n_envs=2", "rollout.n_decisions=4", "update.epochs=2", "update.minibatch_size=8",
                "eval.every=1", "eval.n_episodes=2", "eval.n_envs=2", "params.finetune_steps=3",
                "shield.options.collision=false", "shield.cat_scale=0.5", "shield.cat_penalty=5.0"]
        assert main(["finetune", checkpoint, "--task", "push_puck", "--shield", str(hardware), "--shield-terminate",
                     *[a for s in sets for a in ("--set", s)], "--out", str(tmp_path / out)]) == 0
        return read_log(tmp_path / out / "log.csv")

    rows = run("run", 2)
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:  # the untrained policy's chunks move the pusher far faster than 0.05 m/s
        assert row["shield_rate"] > 0.5 and row["shield_faults"] == 0
    assert sum(r["shield_cat_terminations"] for r in rows) > 0  # CaT ends some rollout episodes
    assert all(r["eval_shield_rate"] > 0.5 for r in rows)  # judged under the shield too
    config = json.loads((tmp_path / "run" / "config.json").read_text())["finetune"]["shield"]
    assert config == {"hardware": str(hardware), "terminate": True, "cat_scale": 0.5, "cat_penalty": 5.0,
                      "options": {"collision": False}}

    # resumed after iteration 1 under the same shield (and CaT draws), the log is the uninterrupted one
    run("resumed", 1)
    for a, b in zip(rows, run("resumed", 2), strict=True):
        assert {k: v for k, v in a.items() if k not in TIMING_COLUMNS} == \
            {k: v for k, v in b.items() if k not in TIMING_COLUMNS}


def test_cat_without_a_penalty_on_negative_rewards_is_refused(tmp_path, checkpoint, capsys):
    """push_puck's rewards are negative: CaT with no penalty would reward ending episodes (measured: a ReinFlow
    run learned to end every rollout episode within 1-2 steps), so the first iteration stops with exit code 2."""
    sets = ["iterations=1", "tensorboard=false", "progress=false", "rollout.n_envs=2", "rollout.n_decisions=2",
            "params.finetune_steps=3", "shield.options.collision=false"]
    code = main(["finetune", checkpoint, "--task", "push_puck", "--shield", str(tight(tmp_path)),
                 "--shield-terminate", *[a for s in sets for a in ("--set", s)], "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "shield.cat_penalty" in err and "negative" in err and "push_puck" in err


def test_finetune_without_a_shield_leaves_the_columns_empty(tmp_path, checkpoint):
    row = read_log(finetune(tiny_config(tmp_path, iterations=1, **{"eval.every": 1}), checkpoint).out_dir
                   / "log.csv")[-1]
    assert row["shield_rate"] is None and row["eval_shield_rate"] is None


def test_eval_reports_interventions_per_evaluated_episode(tmp_path, checkpoint, capsys):
    out = tmp_path / "eval"
    # 3 episodes on 2 envs: a spare env runs in the last round, and finished envs autoreset; neither counts
    assert main(["eval", checkpoint, "--shield", str(tight(tmp_path)), "--no-collision", "--episodes", "3",
                 "--seeds", "2", "--n-envs", "2", "--videos", "0", "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    shield = result["shield"]
    assert result["task"] == "push_puck"  # the hardware file's task
    assert shield["hardware"] == str(tight(tmp_path)) and shield["intervened"] > 0
    assert shield["steps"] == sum(e["length"] for e in result["episodes"])
    assert shield["intervened"] == sum(e["shield"]["intervened"] for e in result["episodes"])
    assert shield["rate"] == pytest.approx(shield["intervened"] / shield["steps"])
    assert all(e["shield"]["steps"] == e["length"] for e in result["episodes"])
    assert '"shield"' in capsys.readouterr().out


def test_eval_of_the_expert_under_the_deployed_shield_is_untouched(tmp_path):
    out = tmp_path / "expert"
    assert main(["eval", "expert", "--shield", "push_puck_sim", "--episodes", "4", "--seeds", "1", "--n-envs", "2",
                 "--videos", "0", "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["success"]["rate"] == 1.0 and result["shield"]["faults"] == 0
    assert result["shield"]["steps"] == sum(e["length"] for e in result["episodes"])


def test_a_hardware_file_that_does_not_fit_the_task_exits_2(tmp_path, checkpoint, capsys):
    def eval_error(*extra: str) -> str:
        assert main(["eval", checkpoint, "--videos", "0", "--out", str(tmp_path / "x"), *extra]) == 2
        return capsys.readouterr().err

    def finetune_error(*extra: str) -> str:
        assert main(["finetune", checkpoint, "--task", "push_puck", "--out", str(tmp_path / "f"), *extra]) == 2
        return capsys.readouterr().err

    panda = str(HARDWARE.parent / "panda_sim.toml")
    for err in (eval_error("--task", "push_puck", "--shield", panda), finetune_error("--shield", panda)):
        assert f"{panda}: joints: expected commands of 2 values (task push_puck's action.dim), got 7" in err
    missing = str(tmp_path / "nope.toml")
    assert f"{missing}: file not found" in eval_error("--shield", missing)
    assert f"{missing}: file not found" in finetune_error("--shield", missing)
    assert "task: eval --shield needs --task" in eval_error("--shield", panda)
    assert "shield.terminate: expected false unless shield.hardware is set" in finetune_error("--shield-terminate")
    assert "shield.cat_penalty: expected finite and >= 0, got -1.0" in finetune_error(
        "--shield", str(HARDWARE), "--set", "shield.cat_penalty=-1.0")
    assert "shield.options.nope: unknown field" in finetune_error("--shield", str(HARDWARE),
                                                                  "--set", "shield.options.nope=1")
    assert "pass one of them" in eval_error("--shield", str(HARDWARE), "--hardware", str(HARDWARE))

    velocity = hardware_file(tmp_path, "velocity", control_mode='"joint_velocity"')
    with pytest.raises(ConfigError, match=r"velocity.toml: control_mode: expected 'joint_position' \(task "
                                          r"push_puck's actions are absolute\), got 'joint_velocity'"):
        env_shield(str(velocity), TASK)
    lift = hardware_file(tmp_path, "lift", task='"lift"')
    with pytest.raises(ConfigError, match=r"lift.toml: task: expected 'push_puck' \(the task being shielded\) or "
                                          "none, got 'lift'"):
        env_shield(str(lift), TASK)
    renamed = hardware_file(tmp_path, "renamed", joints='["slider_x", "slider_y"]')
    with pytest.raises(ConfigError, match=r"renamed.toml: joints"):
        make_vector_env(TASK, 1, shield=env_shield(str(renamed), TASK, ShieldOptions.joint_only())).reset(seed=0)
