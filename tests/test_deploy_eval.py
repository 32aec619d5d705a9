"""``robopolicy eval CHECKPOINT --hardware``: the simulation protocol's report from executor runs on a robot, with an
operator resetting and labelling episodes; on the mock Panda and sim-in-the-loop on the MuJoCo Panda."""

from __future__ import annotations

import io
import json

import pytest

from robopolicy.cli import main
from robopolicy.data.replay_buffer import ReplayBuffer
from robopolicy.eval.hardware import ConsoleOperator, SceneOperator, evaluate_on_hardware
from robopolicy.eval.protocol import EvalConfig
from robopolicy.hal.shield.hardware import ShieldOptions
from robopolicy.hal.spec import HARDWARE_DIR
from tests.test_deploy import checkpoint, joint_policy  # noqa: F401 - the fixture

SIM_KEYS = {"config", "n_episodes", "return", "length", "latency_ms", "episodes", "success"}


def test_console_operator_labels_episodes_and_the_report_matches_simulation(tmp_path, checkpoint,  # noqa: F811
                                                                           capsys) -> None:
    answers = io.StringIO("\ny\n\nmaybe\nn\n")  # Enter to start, then a label; a bad answer is asked again
    prompts = io.StringIO()
    config = EvalConfig(n_episodes=2, policy_seeds=[0], n_videos=0)
    result = evaluate_on_hardware(str(checkpoint), "panda_sim", config, tmp_path / "eval",
                                  ShieldOptions.joint_only(), ConsoleOperator(answers, prompts), max_steps=15,
                                  record=str(tmp_path / "episodes.zarr"), backend="mock")
    assert set(result) >= SIM_KEYS and result["n_episodes"] == 2 and not result["aborted"]
    assert [e["success"] for e in result["episodes"]] == [True, False]
    assert "episode 2/2 (policy seed 0, env seed 100001): failure, 15 steps" in capsys.readouterr().err
    assert result["success"]["rate"] == 0.5 and result["length"]["mean"] == 15
    assert result["shield"]["steps"] == 30 and all(run["held"] for run in result["runs"])
    assert "reset the scene" in prompts.getvalue() and prompts.getvalue().count("success?") == 3
    assert (tmp_path / "eval" / "summary.png").stat().st_size > 0
    saved = json.loads((tmp_path / "eval" / "result.json").read_text())
    assert saved["episodes"] == result["episodes"]
    rb = ReplayBuffer.open(tmp_path / "episodes.zarr")
    assert rb.n_episodes == 2 and rb.n_steps == 30


def test_eval_cli_on_hardware_without_labels(tmp_path, checkpoint, capsys) -> None:  # noqa: F811
    code = main(["eval", str(checkpoint), "--hardware", "panda_sim", "--backend", "mock", "--operator", "none",
                 "--episodes", "1", "--seeds", "1", "--max-steps", "10", "--no-collision", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 0, err
    result = json.loads((tmp_path / "result.json").read_text())
    assert "success" not in result and result["episodes"][0]["length"] == 10
    assert "episode 1/1 (policy seed 0, env seed 100000): unlabelled, 10 steps" in err  # the progress line


def test_eval_needs_a_task_or_hardware(capsys) -> None:
    assert main(["eval", "expert"]) == 2
    assert "--task" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_sim_in_the_loop_on_the_mujoco_panda(tmp_path, checkpoint) -> None:  # noqa: F811
    """The MuJoCo Panda behind the same API: the scene is reset per episode, the run never leaves the limits in
    the simulator's own state (the shield faults on a measured violation, which would abort the evaluation).
    Wall-clock faults are not what it tests (tests/test_hal_mujoco.py and tests/test_executor.py do): on a loaded
    2-core machine one MuJoCo step took 0.49 s (a latency fault) and a plan over a second (the watchdog), so the copy
    runs unpaced (``realtime = false``) and the watchdog waits 200 periods."""
    pytest.importorskip("mujoco")
    unpaced = tmp_path / "panda_sim_unpaced.toml"
    text = (HARDWARE_DIR / "panda_sim.toml").read_text()
    assert "[backend.settings]\n" in text and "realtime" not in text  # else the copy would still run paced
    unpaced.write_text(text.replace("[backend.settings]\n", "[backend.settings]\nrealtime = false\n"))
    config = EvalConfig(n_episodes=2, policy_seeds=[0], n_videos=0)
    result = evaluate_on_hardware(str(checkpoint), str(unpaced), config, tmp_path, ShieldOptions(),
                                  SceneOperator(), max_steps=20, watchdog_periods=200)
    assert not result["aborted"] and result["n_episodes"] == 2
    assert all(run["reason"] == "completed" and run["held"] for run in result["runs"])
    assert result["success"]["rate"] == 0.0  # the bare robot's scene has no success rule
