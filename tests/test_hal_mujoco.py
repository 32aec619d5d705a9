"""The mujoco backend: a joint command moves the simulated Panda, read() returns its state and 84x84 frames."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from robopolicy.hal.backend import LifecycleError, make_backend
from robopolicy.hal.spec import load_hardware

pytest.importorskip("mujoco")


@pytest.fixture(scope="module")
def panda():
    spec = load_hardware("panda_sim")
    backend = make_backend(spec, latency_periods=40)  # 2 s: software rendering on a loaded CPU is slow
    backend.connect()
    yield backend
    backend.close()


def test_joint_command_moves_the_simulated_panda(panda):
    spec = panda.spec
    start = panda.reset_scene()
    np.testing.assert_allclose(start.position, spec.home, atol=1e-9)
    assert start.images["front"].shape == (84, 84, 3) and start.images["eye_in_hand"].dtype == np.uint8
    assert {"position", "velocity", "torque", "ee_position", "images/front"} <= set(start.stamps)
    panda.arm()
    goal = np.array(spec.home)
    goal[0] += 0.3
    goal[3] += 0.2
    for i in range(30):  # a 1.5 s ramp-and-hold at 20 Hz, well inside the velocity limits
        panda.write(np.array(spec.home) + (goal - np.array(spec.home)) * min(1.0, (i + 1) / 20))
    obs = panda.read()
    assert np.abs(obs.position - goal).max() < 1e-3  # gravity-compensated PD tracks the target
    assert np.linalg.norm(obs.ee_position - start.ee_position) > 0.05
    lower, upper = np.array(spec.workspace.lower), np.array(spec.workspace.upper)
    assert np.all(obs.ee_position > lower) and np.all(obs.ee_position < upper)
    assert np.abs(obs.images["front"].astype(int) - start.images["front"].astype(int)).sum() > 0  # the view changed
    panda.disarm()
    with pytest.raises(LifecycleError):
        panda.write(goal)


def test_torque_stays_within_the_limits_on_a_step_command(panda):
    spec = panda.spec
    panda.reset_scene()
    panda.arm()
    jump = np.array(spec.home) + 0.5  # a step the shield would never let through: the torque clip still holds
    panda.write(jump)
    obs = panda.read()
    assert np.all(np.abs(obs.torque) <= np.array(spec.limits.torque) + 1e-6)
    panda.hold()
    panda.disarm()


@pytest.mark.robosuite
def test_the_backend_hosts_a_task_scene():
    pytest.importorskip("robosuite")
    spec = load_hardware("panda_lift_sim")
    backend = make_backend(spec, latency_periods=40)
    backend.connect()
    try:
        first = backend.reset_scene(seed=100_000)
        assert set(first.extras) == {"object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"}
        again = backend.reset_scene(seed=100_000)
        np.testing.assert_allclose(again.extras["object"], first.extras["object"])  # the seed fixes the scene
        assert first.position.shape == (7,) and np.all(np.isfinite(first.position))
        backend.arm()
        for _ in range(3):
            backend.write(np.array([0, 0, 0.5, 0, 0, 0, -1.0]))  # up, gripper open
        obs = backend.read()
        assert obs.extras["robot0_eef_pos"][2] > first.extras["robot0_eef_pos"][2] + 0.01
        assert obs.ee_position[2] > first.ee_position[2] + 0.01  # the right_hand body, in the base frame
        assert backend.last_step.info is not None and not backend.last_step.info["is_success"]
    finally:
        backend.close()



def test_realtime_false_turns_off_the_wall_clock_faults():
    spec = dataclasses.replace(load_hardware("panda_sim"), cameras=[])
    paced, unpaced = make_backend(spec), make_backend(spec, realtime=False)
    assert paced.latency_s == pytest.approx(5 * spec.period_s) and paced.stale_s == pytest.approx(5 * spec.period_s)
    assert unpaced.latency_s == unpaced.stale_s == np.inf
