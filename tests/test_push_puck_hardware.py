"""push_puck's pusher as a robot (hardware/push_puck_sim.toml): prismatic joints in metres, the task scene behind the
mujoco backend, the shield on it (joint limits in m, FK workspace on the pusher body, the puck an allowed contact),
and ``robopolicy eval CKPT --hardware push_puck_sim`` of a tiny BC policy trained here, unattended, with the
simulator's own pusher state checked against the limits at every step."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from robopolicy.cli import main
from robopolicy.data.replay_buffer import ReplayBuffer
from robopolicy.hal.mujoco_backend import MujocoBackend
from robopolicy.hal.shield.hardware import ShieldedBackend, ShieldOptions, build_shield
from robopolicy.hal.spec import HARDWARE_DIR, load_hardware
from robopolicy.specs import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
TEXT = (HARDWARE_DIR / "push_puck_sim.toml").read_text()
SPEC = load_hardware("push_puck_sim")
UNITS = '''position = "m"
velocity = "m/s"
acceleration = "m/s^2"
jerk = "m/s^3"
torque = "N"'''


def _write(tmp_path, text: str):
    path = tmp_path / "pp.toml"
    path.write_text(text.replace('mjcf = "../robopolicy', f'mjcf = "{HARDWARE_DIR.parent}/robopolicy'))
    return path


def test_prismatic_joints_are_in_metres_per_file_or_per_joint(tmp_path):
    assert SPEC.joint_kinds == ["m", "m"] and SPEC.limits.measured_velocity == (2.0, 2.0)
    per_joint = UNITS.replace('"m"', '["m", "m"]').replace('"m/s"', '["m/s", "m/s"]')
    assert load_hardware(_write(tmp_path, TEXT.replace(UNITS, per_joint))).joint_kinds == ["m", "m"]
    limits = build_shield(SPEC).limits  # the soft margin is linear_margin (m) for prismatic joints
    np.testing.assert_allclose(limits.soft_upper, [0.23, 0.23])


@pytest.mark.parametrize(("old", "new", "key"), [
    ('position = "m"', 'position = "mm"', "units.position"),
    ('velocity = "m/s"', 'velocity = "rad/s"', "units.velocity"),
    ('torque = "N"', 'torque = ["N", "Nm"]', "units.torque[1]"),
    ('position = "m"', 'position = ["m"]', "units.position"),
    ("measured_velocity = [2.0, 2.0]", "measured_velocity = [0.5, 0.5]", "limits.measured_velocity"),
])
def test_bad_units_name_the_key(tmp_path, old, new, key):
    assert old in TEXT
    path = _write(tmp_path, TEXT.replace(old, new, 1))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {key}")):
        load_hardware(path)


def test_the_backend_refuses_units_that_do_not_fit_the_model_joints(tmp_path):
    rad = 'position = "rad"\nvelocity = "rad/s"\nacceleration = "rad/s^2"\njerk = "rad/s^3"\ntorque = "Nm"'
    spec = load_hardware(_write(tmp_path, TEXT.replace(UNITS, rad)))
    with pytest.raises(ConfigError, match=r"units\.position: joint 'pusher_x' is in 'rad'.*mjJNT_SLIDE"):
        MujocoBackend(spec).connect()


def _assert_inside(position, velocity, ee) -> None:
    """The simulator's own pusher state against the file's hard limits."""
    lim, ws = SPEC.limits, SPEC.workspace
    assert (position >= np.array(lim.position_lower)).all()
    assert (position <= np.array(lim.position_upper)).all()
    assert (np.abs(velocity) <= np.array(lim.measured_velocity)).all()
    assert (ee >= np.array(ws.lower)).all() and (ee <= np.array(ws.upper)).all()


def test_adversarial_commands_never_take_the_pusher_out_of_its_limits():
    """Random targets far outside the arena and square waves at the servo's resonance (where the lightly damped
    pusher overshoots its commands most): the shield's output keeps the simulated pusher's position, velocity and end
    effector inside their limits (the positions through the servo stage: without it such commands drive the servo up
    to ~5 mm into MuJoCo's soft end stop; tests/test_shield_servo.py checks every simulator step)."""
    backend = MujocoBackend(SPEC, realtime=False)
    backend.connect()
    backend.arm()
    robot = ShieldedBackend(backend, build_shield(SPEC, ShieldOptions()))
    rng = np.random.default_rng(0)
    peak = 0.0
    try:
        for episode, half in enumerate([0, 4, 5]):  # 0: random targets; else a square wave of this half-period
            backend.reset_scene(episode)
            robot.start()
            for k in range(150):
                target = rng.uniform(-1, 1, 2) if half == 0 else np.full(2, 1.0 if (k // half) % 2 else -1.0)
                robot.send(target)
                obs = robot.read()  # read straight from MjData; the shield faults on a measured violation
                _assert_inside(obs.position, obs.velocity, obs.ee_position)
                peak = max(peak, float(np.abs(obs.velocity).max()))
    finally:
        backend.close()
    assert robot.shield.counts.by_stage["position"] > 0 and peak > SPEC.limits.velocity[0]  # the servo overshoots


def test_eval_on_push_puck_sim_through_executor_and_shield(tmp_path, capsys):
    data = tmp_path / "demos.zarr"
    assert main(["collect", "push_puck_proficient", "--episodes", "4", "--output", str(data)]) == 0
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f"""
[policy]
obs = [{{ key = "state", shape = [6] }}]
action = {{ dim = 2 }}
n_obs_steps = 2
horizon = 8
n_action_steps = 4
[policy.backbone]
kind = "mlp"
hidden_dims = [64, 64]
[policy.head]
name = "flow"
[train]
dataset = "{data}"
steps = 200
batch_size = 64
val_ratio = 0.0
log_every = 100
ckpt_every = 200
progress = false
""")
    assert main(["train", str(recipe), "--out", str(tmp_path / "bc"), "--resume", "never"]) == 0
    record = tmp_path / "episodes.zarr"
    code = main(["eval", str(tmp_path / "bc" / "checkpoints" / "latest"), "--hardware", "push_puck_sim",
                 "--episodes", "2", "--seeds", "1", "--max-steps", "50", "--record", str(record),
                 "--out", str(tmp_path / "eval")])
    assert code == 0, capsys.readouterr()
    result = json.loads((tmp_path / "eval" / "result.json").read_text())
    assert result["hardware"] == "push_puck_sim" and result["task"] == "push_puck" and not result["aborted"]
    assert result["n_episodes"] == 2 and 0.0 <= result["success"]["rate"] <= 1.0
    steps = sum(e["length"] for e in result["episodes"])
    assert result["shield"]["steps"] == steps and 0 <= result["shield"]["intervened"] <= steps
    assert all(run["held"] and run["reason"] in ("completed", "stopped") for run in result["runs"])
    rb = ReplayBuffer.open(record)  # every step's reading: the simulator's own pusher state
    assert rb.n_episodes == 2 and rb.n_steps == steps
    for i in range(rb.n_episodes):
        episode = rb.get_episode(i)
        for q, v, ee in zip(episode["joint_position"], episode["joint_velocity"], episode["ee_position"]):
            _assert_inside(q, v, ee)
