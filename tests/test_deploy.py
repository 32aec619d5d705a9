"""``robopolicy deploy`` end to end on the mock Panda: a tiny policy runs through executor and shield, the run is
recorded, ``robopolicy train`` trains on the recording; ``--dry-run`` never reaches the arm; a policy that does
not fit the robot is refused with exit 2 before arming."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robopolicy.cli import main
from robopolicy.data.replay_buffer import ReplayBuffer
from robopolicy.hal.executor import Executor
from robopolicy.hal.policy_adapter import policy_infer
from robopolicy.hal.session import executor_config, shielded_robot
from robopolicy.hal.shield.hardware import ShieldOptions
from robopolicy.hal.spec import load_hardware
from robopolicy.policy import Policy
from robopolicy.specs import ActionSpec, BackboneConfig, HeadConfig, ObsSpec, PolicyConfig

SPEC = load_hardware("panda_sim")
HOME = np.array(SPEC.home, dtype=np.float32)


def joint_policy(obs_key: str = "joint_position", action_dim: int = 7) -> Policy:
    """An untrained 1-step flow policy whose normalizer spans +-0.3 rad around the home pose."""
    torch.manual_seed(0)
    config = PolicyConfig(obs=[ObsSpec(obs_key, (7,))], action=ActionSpec(action_dim), n_obs_steps=2, horizon=8,
                          n_action_steps=4, backbone=BackboneConfig(kind="mlp", hidden_dims=[32, 32]),
                          head=HeadConfig("flow", {"inference_steps": 1}))
    policy = Policy(config)
    lo, hi = HOME - 0.3, HOME + 0.3
    stats = {"min": lo, "max": hi, "mean": HOME, "std": np.full(7, 0.15, np.float32)}
    policy.fit_normalizer({obs_key: stats, "action": {k: v[:action_dim] for k, v in stats.items()}})
    return policy


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "policy"
    joint_policy().save(path)
    return path


def test_deploy_on_mock_records_a_run_that_trains(tmp_path, checkpoint, capsys) -> None:
    record = tmp_path / "run.zarr"
    code = main(["deploy", str(checkpoint), "--hardware", "panda_sim", "--backend", "mock", "--steps", "40",
                 "--record", str(record), "--out", str(tmp_path / "out"), "--no-collision"])
    assert code == 0, capsys.readouterr()
    report = json.loads((tmp_path / "out" / "deploy.json").read_text())
    assert report["reason"] == "completed" and report["steps"] == 40 and report["held"]
    assert report["shield"]["steps"] == 40 and report["backend"]["n_writes"] == 40
    rb = ReplayBuffer.open(record)
    assert rb.n_steps == 40 and "joint_position" in rb.keys
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f"""
[policy]
obs = [{{ key = "joint_position", shape = [7] }}]
action = {{ dim = 7 }}
n_obs_steps = 2
horizon = 8
n_action_steps = 4
[policy.backbone]
kind = "mlp"
hidden_dims = [32]
[policy.head]
name = "flow"
[train]
dataset = "{record}"
steps = 3
batch_size = 8
val_ratio = 0.0
log_every = 1
ckpt_every = 3
""")
    assert main(["train", str(recipe), "--out", str(tmp_path / "bc"), "--resume", "never"]) == 0
    assert any((tmp_path / "bc" / "checkpoints").iterdir())


def test_dry_run_reads_live_but_never_commands_the_arm(tmp_path, checkpoint, capsys) -> None:
    code = main(["deploy", str(checkpoint), "--hardware", "panda_sim", "--backend", "mock", "--steps", "20",
                 "--dry-run", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr()
    report = json.loads((tmp_path / "deploy.json").read_text())
    assert report["dry_run"] and report["shield"]["steps"] == 20
    policy = Policy.load(checkpoint).eval()
    with shielded_robot(SPEC, ShieldOptions.joint_only(), dry_run=True, backend="mock", policy=policy) as robot:
        run = Executor(robot, policy_infer(policy), executor_config(policy, max_steps=20)).run()
        inner = robot.backend.inner
        assert run.steps == 20 and robot.backend.discarded == 20
        assert inner.robot.n_commands == 0 and inner.state.value == "connected"  # never armed


@pytest.mark.parametrize("policy_kwargs, match", [
    ({"action_dim": 6}, "have 6 values"),
    ({"obs_key": "robot0_eef_pos"}, "robot0_eef_pos"),
])
def test_policy_that_does_not_fit_the_robot_exits_2_before_arming(tmp_path, capsys, policy_kwargs, match) -> None:
    joint_policy(**policy_kwargs).save(tmp_path / "bad")
    code = main(["deploy", str(tmp_path / "bad"), "--hardware", "panda_sim", "--backend", "mock", "--steps", "5",
                 "--out", str(tmp_path)])
    assert code == 2
    assert match in capsys.readouterr().err
