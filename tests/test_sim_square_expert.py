"""Square expert's yaw choices and recovery phases, on synthetic observations (no simulator)."""

import numpy as np
import pytest

from robopolicy.sim.experts.robosuite_experts import SquareExpert, wrap

PEG = [0.23, 0.1, 0.85]


def yaw_quat(yaw: float) -> np.ndarray:
    """(x, y, z, w) quaternion of a gripper pointing down (pi about x), turned by ``yaw`` about z."""
    return np.array([np.cos(yaw / 2), np.sin(yaw / 2), 0.0, 0.0])


def observation(nut_pos, nut_yaw: float, eef_pos, eef_yaw: float, gap: float) -> dict[str, np.ndarray]:
    nut_quat = np.array([0.0, 0.0, np.sin(nut_yaw / 2), np.cos(nut_yaw / 2)])
    return {"object": np.concatenate([np.zeros(7), nut_pos, nut_quat]), "robot0_eef_pos": np.asarray(eef_pos, float),
            "robot0_eef_quat": yaw_quat(eef_yaw), "robot0_gripper_qpos": np.array([gap / 2, -gap / 2])}


def expert_in(phase: str, home_yaw: float = 0.0, steps: int = 0) -> SquareExpert:
    expert = SquareExpert(peg=PEG)
    expert.home_yaw, expert.phase, expert.phase_steps = home_yaw, expert.phases.index(phase), steps
    return expert


@pytest.mark.parametrize("nut_yaw", np.linspace(-np.pi, np.pi, 37))
def test_carry_turn_squares_the_nut_and_keeps_the_handle_off_the_far_side(nut_yaw):
    expert = expert_in("carry")
    turn = expert.carry_turn(nut_yaw, eef_yaw=nut_yaw)
    assert abs(turn) <= np.pi / 2 + 1e-3
    assert abs(wrap(nut_yaw + turn, np.pi / 2)) < 1e-9  # square with the peg
    assert np.cos(nut_yaw + turn) < 0.5  # the handle (nut's +x) never points away from the robot
    # halfway through the turn the target is the same: no switching between equivalent yaws
    half = nut_yaw + turn / 2
    assert abs(wrap(half + expert.carry_turn(half, eef_yaw=half) - (nut_yaw + turn), 2 * np.pi)) < 1e-6


def test_grasp_yaw_turns_towards_the_middle_of_joint_7s_range():
    # seed 100011: turning the short way (to 1.48 - pi) drove joint 7 into its limit and froze the arm
    expert = expert_in("above", home_yaw=-0.12)
    assert expert.grasp_yaw(1.48) == pytest.approx(1.48)
    assert wrap(expert.grasp_yaw(-1.66) - 1.48, 2 * np.pi) == pytest.approx(0.0, abs=0.01)


def test_empty_fingers_during_carry_go_back_to_grasping():
    expert = expert_in("carry")
    expert.act(observation([0.0, 0.0, 0.83], 0.3, [0.1, 0.0, 1.05], 0.3, gap=0.001))
    assert expert.phases[expert.phase] == "above"


def test_nut_jammed_on_the_peg_is_lifted_and_aligned_again():
    expert = expert_in("lower", steps=60)
    expert.act(observation([0.24, 0.1, 0.92], 0.0, [0.18, 0.1, 0.95], 0.0, gap=0.03))  # 1 cm off the peg
    assert expert.phases[expert.phase] == "carry"


def test_nut_slipping_off_beside_the_peg_is_grasped_again():
    expert = expert_in("lower", steps=5)
    expert.act(observation([0.15, 0.1, 0.84], 0.0, [0.1, 0.1, 0.95], 0.0, gap=0.03))
    assert expert.phases[expert.phase] == "above"
