"""The whole shield: for arbitrary command sequences (NaN, +-inf, out of range, adversarial jumps) every output
satisfies every enabled limit or is the fallback (hold, or a deceleration inside the hard limits); measured
states outside the hard limits fault; the shadow-model stages keep the end effector in the workspace and the
arm out of collision; and the shielded backend is the only caller of a backend's raw write."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from robopolicy.hal.shield import Shield, ShieldConfig, ShieldFault, stages
from robopolicy.hal.shield.hardware import ShieldedBackend, ShieldOptions, build_shield
from robopolicy.hal.shield.kinematics import Workspace
from robopolicy.hal.shield.qp import qp_stage
from robopolicy.hal.spec import load_hardware
from tests.test_shield_stages import N, limits, within

ROOT = Path(__file__).resolve().parents[1]
PANDA = load_hardware("panda_sim")
HOME = np.array(PANDA.home)

anything = st.floats(allow_nan=True, allow_infinity=True, width=64)
commands_n = st.one_of(hnp.arrays(np.float64, N, elements=anything),
                       hnp.arrays(np.float64, N, elements=st.floats(-1e3, 1e3)))


def check_step(shield: Shield, last: stages.Motion, step) -> None:
    """The pipeline's guarantee for one step."""
    q = step.command
    lim = shield.limits
    assert q.shape == last.q.shape and np.isfinite(q).all()
    assert within(q, lim.lower, lim.upper)  # hard limits: always
    if step.fallback is None:
        assert shield.violations(q, last) == []
    elif step.fallback == "hold":
        np.testing.assert_array_equal(q, last.q)
    else:  # decelerate: no joint speeds up
        assert (np.abs(q - last.q) <= np.abs(last.v) * lim.dt + 1e-9).all()


@settings(max_examples=80, deadline=None)
@given(limits(), st.lists(commands_n, min_size=1, max_size=30), st.sampled_from(["decelerate", "hold"]))
def test_joint_pipeline_output_satisfies_every_limit_or_falls_back(lim, commands, fallback) -> None:
    shield = Shield(ShieldConfig(lim, fallback=fallback))
    shield.reset((lim.soft_lower + lim.soft_upper) / 2)
    for command in commands:
        last = shield.motion
        step = shield(command)
        check_step(shield, last, step)
        if not np.isfinite(command).all():
            assert step.fallback is not None and step.interventions[0].stage == "schema"
    assert shield.counts.steps == len(commands)


@settings(max_examples=80, deadline=None)
@given(limits(), st.lists(hnp.arrays(np.float64, N + 1, elements=anything), min_size=1, max_size=20))
def test_gripper_value_is_one_finite_number_in_range_and_every_change_is_logged(lim, commands) -> None:
    shield = Shield(ShieldConfig(lim, gripper=True))
    shield.reset((lim.soft_lower + lim.soft_upper) / 2)
    for command in commands:
        last = shield.motion
        step = shield(command)
        arm, gripper = step.command[:-1], step.command[-1]
        check_step(shield, last, dataclasses.replace(step, command=arm))
        assert np.isfinite(gripper) and -1.0 <= gripper <= 1.0
        logged = [i for i in step.interventions if i.stage == "gripper"]
        assert bool(logged) == (gripper != command[-1])  # NaN != anything: a non-finite value is always logged
        if np.isfinite(command[-1]):
            assert gripper == np.clip(command[-1], -1.0, 1.0)
        else:
            assert gripper == 0.0  # the neutral command


@settings(max_examples=40, deadline=None)
@given(limits(), st.lists(commands_n, min_size=1, max_size=20))
def test_more_stages_never_loosen_a_limit(lim, commands) -> None:
    """The same commands through the position-only shield and the shield with rate limits too: every output of
    the fuller shield satisfies the position-only shield's limit as well."""
    narrow = Shield(ShieldConfig(stages.JointLimits(lim.lower, lim.upper, lim.dt, lim.margin)))
    full = Shield(ShieldConfig(lim))
    start = (lim.soft_lower + lim.soft_upper) / 2
    narrow.reset(start)
    full.reset(start)
    for command in commands:
        last = full.motion
        step = full(command)
        narrow(command)
        if step.fallback is None:
            assert within(step.command, *stages.position_bounds(narrow.limits, last))


@pytest.fixture(scope="module")
def panda_shield() -> Shield:
    return build_shield(PANDA, ShieldOptions(qp=True))


@settings(max_examples=25, deadline=None)
@given(st.lists(hnp.arrays(np.float64, 7, elements=st.one_of(st.floats(-4.0, 4.0), anything)),
                min_size=1, max_size=12))
def test_full_panda_pipeline_keeps_workspace_and_collision_limits(panda_shield, offsets) -> None:
    shield = panda_shield
    shield.reset(HOME)
    for offset in offsets:
        last = shield.motion
        step = shield(HOME + offset)
        check_step(shield, last, step)
        if step.fallback != "decelerate":  # the fallback's deceleration is only checked in position
            assert shield.config.workspace.contains(shield.shadow.ee_position(step.command))
            assert shield.shadow.contacts(step.command) == []


def test_adversarial_extremes_on_panda_never_leave_the_limits(panda_shield) -> None:
    """Bang-bang jumps between the joint limits (the worst case for rate limits), 300 steps."""
    shield, lim = panda_shield, panda_shield.limits
    shield.reset(HOME)
    rng = np.random.default_rng(0)
    for _ in range(300):
        last = shield.motion
        target = np.where(rng.random(7) < 0.5, lim.lower - 1, lim.upper + 1)
        check_step(shield, last, shield(target))
    assert shield.counts.intervened == 300


def test_workspace_stage_scales_the_step_back_to_the_box(panda_shield) -> None:
    shield = panda_shield
    shield.reset(HOME)
    tucked = HOME + np.array([0, 1.4, 0, -0.5, 0, 0, 0])  # leans forward with the hand pulled in near the base
    ws = shield.config.workspace
    assert not ws.contains(shield.shadow.ee_position(tucked))
    for _ in range(100):
        step = shield(tucked)
    assert shield.counts.by_stage["workspace"] > 0
    ee = shield.shadow.ee_position(step.command)
    assert ws.contains(ee) and np.min(np.abs(np.concatenate([ee - ws.lower, ws.upper - ee]))) < 0.02


def test_collision_stage_stops_short_of_a_self_collision() -> None:
    shield = build_shield(PANDA, ShieldOptions(workspace=False, min_distance=0.01))
    shield.reset(HOME)
    target = HOME.copy()
    target[3], target[5] = -3.0, 0.0  # elbow folded shut, wrist turned onto the forearm: link 7 hits link 5
    assert shield.shadow.contacts(target)
    for _ in range(200):
        step = shield(target)
        assert shield.shadow.contacts(step.command) == []
    assert shield.counts.by_stage["collision"] > 0


def test_qp_projection_satisfies_box_and_linearised_workspace(panda_shield) -> None:
    shield = panda_shield
    shield.reset(HOME)
    last = shield.motion
    lo, hi = stages.feasible_box(shield.limits, last)
    request = HOME + 1.0
    out = qp_stage(request, last, lo, hi, shield.shadow, shield.config.workspace)
    assert out.feasible and within(out.command, lo, hi)
    p, jac = shield.shadow.ee_jacobian(last.q)
    ws = shield.config.workspace
    predicted = p + jac @ (out.command - last.q)
    assert (predicted <= p + 0.5 * (ws.upper - p) + 1e-6).all() and (predicted >= p - 0.5 * (p - ws.lower) - 1e-6).all()
    empty = qp_stage(request, last, hi + 1, hi, shield.shadow, ws)
    assert not empty.feasible


@pytest.mark.parametrize("bad, match", [
    (lambda q: q + np.array([0, 0, 0, 0, 0, 0, 0.5]), "outside its hard limits"),
    (lambda q: np.where(np.arange(7) == 2, np.nan, q), "finite"),
])
def test_measured_state_outside_hard_limits_faults_instead_of_clipping(panda_shield, bad, match) -> None:
    q = HOME.copy()
    q[6] = PANDA.limits.position_upper[6] - 0.001  # the wrist's roll: the hand stays where it is
    panda_shield.check_measured(q)  # inside the hard limits (in the soft margin): fine
    with pytest.raises(ShieldFault, match=match):
        panda_shield.check_measured(bad(q))
    with pytest.raises(ShieldFault, match="rad/s"):
        panda_shield.check_measured(HOME, velocity=np.full(7, 10.0))


def test_measured_end_effector_outside_the_workspace_faults(panda_shield) -> None:
    q = HOME + np.array([0, 1.4, 0, -0.5, 0, 0, 0])  # hand pulled in near the base, in front of the box
    assert not panda_shield.config.workspace.contains(panda_shield.shadow.ee_position(q), 0.01)
    with pytest.raises(ShieldFault, match="workspace"):
        panda_shield.check_measured(q)


def test_interventions_are_logged_and_counted_per_episode() -> None:
    shield = build_shield(PANDA, ShieldOptions.joint_only())
    shield.reset(HOME)
    shield(HOME)  # already safe: no intervention
    step = shield(HOME + 0.05)  # within the velocity limit's step, beyond what one period's acceleration allows
    assert [i.stage for i in step.interventions] == ["acceleration"]
    shield([np.nan] * 7)
    counts = shield.counts.to_dict()
    assert counts["steps"] == 3 and counts["intervened"] == 2 and counts["by_stage"]["schema"] == 1
    assert counts["fallbacks"] in ({"decelerate": 1}, {"hold": 1})
    assert len(shield.log) == 2 and np.isnan(shield.log[-1].raw).all()
    shield.reset(HOME)
    assert shield.counts.steps == 0


def test_shielded_backend_writes_only_shielded_commands() -> None:
    from robopolicy.hal.mock import MockBackend

    spec = load_hardware("panda_sim")
    backend = MockBackend(spec)
    backend.connect()
    backend.arm()
    robot = ShieldedBackend(backend, build_shield(spec, ShieldOptions.joint_only()))
    robot.start()
    for target in (HOME + 2.0, [np.inf] * 7, HOME - 5.0):
        step, applied = robot.send(np.asarray(target, float))
        np.testing.assert_array_equal(applied.value, step.command)
    applied_values = [value for kind, value in backend.robot.log if kind == "command"]
    assert len(applied_values) == 3 and all(np.isfinite(v).all() for v in applied_values)
    backend.robot.q[3] = 1.0  # the arm is somehow beyond a hard limit: the next read faults, the arm holds
    with pytest.raises(ShieldFault):
        robot.read()
    assert backend.state.value == "faulted" and backend.robot.held


# Where a backend's raw write may be called: the shield's wrapper, the backends themselves (delegation inside
# the HAL: readonly, remote server applying what a shielded client sent) and their own tests.
# the shield's wrapper, and the robot-side server applying what a client's shielded wrapper sent over the link
RAW_WRITE_ALLOWED = {"robopolicy/hal/shield/hardware.py", "robopolicy/hal/server.py"}


def _raw_write_calls(path: Path) -> list[int]:
    """Lines calling ``<something backend-like>.write(...)`` (a receiver named like a backend or robot)."""
    tree = ast.parse(path.read_text(), str(path))
    lines = []
    for node in ast.walk(tree):
        func = node.func if isinstance(node, ast.Call) else None
        if isinstance(func, ast.Attribute) and func.attr in ("write", "_write"):
            receiver = ast.unparse(func.value).lower()
            if any(word in receiver for word in ("backend", "robot", "inner", "hardware", "arm")):
                lines.append(node.lineno)
    return lines


def test_no_path_skips_the_shield() -> None:
    """Only the shielded wrapper calls a backend's raw write (scripts and the package alike; the robot-side
    server applies commands a client's shielded wrapper sent)."""
    offenders = []
    for path in sorted([*ROOT.glob("robopolicy/**/*.py"), *ROOT.glob("scripts/*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        if rel in RAW_WRITE_ALLOWED:
            continue
        offenders += [f"{rel}:{line}" for line in _raw_write_calls(path)]
    assert offenders == [], f"raw backend writes outside the shield: {offenders}"
    assert _raw_write_calls(ROOT / "robopolicy/hal/shield/hardware.py"), "the walker no longer sees the one real call"


def test_build_shield_rejects_an_end_effector_control_mode() -> None:
    from dataclasses import replace

    from robopolicy.specs import ConfigError

    with pytest.raises(ConfigError, match="control_mode"):
        build_shield(replace(PANDA, control_mode="ee_delta"))


def test_workspace_rejects_an_empty_box() -> None:
    with pytest.raises(ValueError, match="workspace"):
        Workspace(np.zeros(3), np.array([1.0, 0.0, 1.0]))
