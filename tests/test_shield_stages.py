"""Property-based tests of the shield's joint-space stages: for arbitrary commands (NaN, +-inf, far out of
range) each stage's output satisfies its own limit, and applying stages one after the other never loosens an
earlier stage's limit whenever the limits together admit a command."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from robopolicy.hal.shield import stages
from robopolicy.hal.shield.stages import JointLimits, Motion

N = 3
SETTINGS = settings(max_examples=100, deadline=None)

anything = st.floats(allow_nan=True, allow_infinity=True, width=64)
wild = hnp.arrays(np.float64, N, elements=anything)
large = hnp.arrays(np.float64, N, elements=st.floats(-1e6, 1e6))
positive = hnp.arrays(np.float64, N, elements=st.floats(0.05, 50.0))


@st.composite
def limits(draw) -> JointLimits:
    lower = draw(hnp.arrays(np.float64, N, elements=st.floats(-3.0, 0.0)))
    span = draw(hnp.arrays(np.float64, N, elements=st.floats(0.2, 6.0)))
    margin = draw(st.floats(0.0, 0.09))
    rates = [draw(st.one_of(st.none(), positive)) for _ in range(3)]
    return JointLimits(lower, lower + span, dt=draw(st.sampled_from([0.005, 0.02, 0.1])), margin=np.full(N, margin),
                       velocity=rates[0], acceleration=rates[1], jerk=rates[2])


@st.composite
def limits_and_motion(draw) -> tuple[JointLimits, Motion]:
    """Limits and a last commanded motion inside the soft position limits (any velocity and acceleration
    within the rate limits, as the shield's own outputs are)."""
    lim = draw(limits())
    frac = draw(hnp.arrays(np.float64, N, elements=st.floats(0.0, 1.0)))
    q = lim.soft_lower + frac * (lim.soft_upper - lim.soft_lower)
    v_max = lim.velocity if lim.velocity is not None else np.full(N, 5.0)
    a_max = lim.acceleration if lim.acceleration is not None else np.full(N, 50.0)
    v = draw(hnp.arrays(np.float64, N, elements=st.floats(-1.0, 1.0))) * v_max
    a = draw(hnp.arrays(np.float64, N, elements=st.floats(-1.0, 1.0))) * a_max
    return lim, Motion(q, v, a)


def within(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> bool:
    tol = 1e-9 * (1 + np.abs(x))
    return bool(((x >= lo - tol) & (x <= hi + tol)).all())


@SETTINGS
@given(st.one_of(wild, hnp.arrays(np.float64, st.integers(0, 5), elements=anything), st.just("seven"),
                 st.just([1.0, None, 2.0])), limits_and_motion())
def test_schema_passes_only_finite_vectors_of_the_joint_count(command, lm) -> None:
    _, last = lm
    out = stages.schema(command, last)
    ok = isinstance(command, np.ndarray) and command.shape == (N,) and np.isfinite(command).all()
    assert out.feasible == ok
    assert out.command.shape == (N,) and np.isfinite(out.command).all()
    np.testing.assert_array_equal(out.command, command if ok else last.q)


@SETTINGS
@given(large, limits_and_motion(), st.sampled_from(["position", "velocity", "acceleration", "jerk"]))
def test_each_clip_stage_satisfies_its_own_limit(command, lm, name) -> None:
    lim, last = lm
    if name not in stages.enabled_bounds(lim):
        return
    out = stages.clip_stage(name)(command, last, lim)
    lo, hi = stages.BOUNDS[name](lim, last)
    assert within(out.command, lo, hi)
    assert out.amount == pytest.approx(np.max(np.abs(out.command - command)))
    again = stages.clip_stage(name)(out.command, last, lim)  # a safe command passes untouched
    assert again.amount == 0.0


@SETTINGS
@given(large, limits_and_motion())
def test_the_position_stage_keeps_commands_inside_the_soft_limits(command, lm) -> None:
    lim, last = lm
    out = stages.position_stage(command, last, lim)
    assert within(out.command, lim.soft_lower, lim.soft_upper)


@SETTINGS
@given(large, limits_and_motion())
def test_applying_stages_in_sequence_never_loosens_an_earlier_limit(command, lm) -> None:
    lim, last = lm
    lo, hi = stages.feasible_box(lim, last)
    cmd = command
    for name in stages.enabled_bounds(lim):
        cmd = stages.clip_stage(name)(cmd, last, lim).command
    if (lo <= hi).all():
        assert stages.joint_violations(cmd, last, lim) == []
        assert within(cmd, lo, hi)
    else:  # no command satisfies every limit: the check says so, and the pipeline falls back
        assert stages.joint_violations(cmd, last, lim) != []


@settings(max_examples=60, deadline=None)
@given(limits_and_motion(), st.lists(large, min_size=1, max_size=40))
def test_braking_bound_keeps_position_and_acceleration_limits_jointly_feasible(lm, commands) -> None:
    """Once a command is inside the braking bound, the next step can always satisfy both limits again (no
    jerk limit: jerk can make them infeasible, which the pipeline's fallback handles)."""
    lim, _ = lm
    lim = JointLimits(lim.lower, lim.upper, lim.dt, lim.margin, velocity=lim.velocity,
                      acceleration=lim.acceleration if lim.acceleration is not None else np.full(N, 10.0))
    last = Motion.at_rest((lim.soft_lower + lim.soft_upper) / 2)
    for command in commands:
        cmd = command
        for name in stages.enabled_bounds(lim):
            cmd = stages.clip_stage(name)(cmd, last, lim).command
        assert stages.joint_violations(cmd, last, lim) == []
        last = last.advance(cmd, lim.dt)


@SETTINGS
@given(limits_and_motion())
def test_decelerate_slows_every_joint_within_the_acceleration_limit(lm) -> None:
    lim, last = lm
    q = stages.decelerate(last, lim)
    assert within(q, lim.lower, lim.upper)
    v = (q - last.q) / lim.dt
    assert (np.abs(v) <= np.abs(last.v) + 1e-9).all()
    if lim.acceleration is not None:  # except where the hard limit itself stops the joint
        free = (q > lim.lower) & (q < lim.upper)
        dv = lim.acceleration * lim.dt
        assert within((v - last.v)[free], -dv[free], dv[free])
    else:
        np.testing.assert_array_equal(q, last.q)


def test_joint_limits_reject_bad_values_by_name() -> None:
    with pytest.raises(ValueError, match="velocity"):
        JointLimits(np.zeros(2), np.ones(2), 0.01, velocity=np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="margin"):
        JointLimits(np.zeros(2), np.ones(2), 0.01, margin=np.full(2, 0.6))
    with pytest.raises(ValueError, match="dt"):
        JointLimits(np.zeros(2), np.ones(2), 0.0)
