"""Property-based tests of the end-effector delta shield (``control_mode = "ee_delta"``, hardware/panda_lift_sim.toml):
for arbitrary commands (NaN, +-inf, far out of range, wrong shapes, not numbers) and measured states, the output is a
finite delta inside its per-step bounds whose translation keeps the measured end effector in the workspace box (or
does not move it further out), or the zero-delta fallback; the workspace stage never loosens the delta bounds; a
measured joint state beyond the hard limits is a fault, never a clip."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from robopolicy.hal.shield import ee_delta
from robopolicy.hal.shield.ee_delta import EeDeltaConfig, EeDeltaShield
from robopolicy.hal.shield.hardware import ShieldOptions, build_shield
from robopolicy.hal.shield.kinematics import Workspace
from robopolicy.hal.shield.pipeline import MIN_INTERVENTION, ShieldFault
from robopolicy.hal.spec import load_hardware
from robopolicy.specs import ConfigError

SETTINGS = settings(max_examples=100, deadline=None)
anything = st.floats(allow_nan=True, allow_infinity=True, width=64)
commands = st.one_of(hnp.arrays(np.float64, 7, elements=anything),
                     hnp.arrays(np.float64, 7, elements=st.floats(-1e6, 1e6)),
                     hnp.arrays(np.float64, 7, elements=st.floats(-1.2, 1.2)),
                     hnp.arrays(np.float64, st.integers(0, 9), elements=anything), st.just("seven"),
                     st.just([1.0, None, 2.0]))
if importlib.util.find_spec("robosuite") is None:  # the Panda model comes from robosuite's assets
    pytest.skip("robosuite is not installed", allow_module_level=True)
SPEC = load_hardware("panda_lift_sim")
SHIELD = build_shield(SPEC, ShieldOptions())
LOWER, UPPER = np.array(SPEC.limits.position_lower), np.array(SPEC.limits.position_upper)
HOME = np.array(SPEC.home)


@st.composite
def configs(draw) -> EeDeltaConfig:
    scale = draw(hnp.arrays(np.float64, 6, elements=st.floats(1e-3, 1.0)))
    high = draw(hnp.arrays(np.float64, 6, elements=st.floats(1e-2, 5.0)))
    lower = draw(hnp.arrays(np.float64, 3, elements=st.floats(-2.0, 1.0)))
    span = draw(hnp.arrays(np.float64, 3, elements=st.floats(0.05, 2.0)))
    return EeDeltaConfig(scale, high, Workspace(lower, lower + span))


def within(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> bool:
    tol = 1e-9 * (1 + np.abs(x))
    return bool(((x >= lo - tol) & (x <= hi + tol)).all())


@SETTINGS
@given(configs(), hnp.arrays(np.float64, 6, elements=anything), hnp.arrays(np.float64, 3, elements=st.floats(-3, 3)))
def test_stages_satisfy_their_bounds_and_the_workspace_never_loosens_the_delta_bounds(config, command, ee) -> None:
    c = ee_delta.schema(command)
    assert c.feasible == bool(np.isfinite(command).all())
    if not c.feasible:
        assert (c.command == 0).all() and not ee_delta.violations(c.command, config, ee)  # the fallback is safe
        return
    d = ee_delta.clip(c.command, *ee_delta.delta_bounds(config)).command
    assert within(d, *ee_delta.delta_bounds(config))
    w = ee_delta.clip(d, *ee_delta.workspace_bounds(config, ee)).command
    assert within(w, *ee_delta.workspace_bounds(config, ee)) and within(w, *ee_delta.delta_bounds(config))
    assert not ee_delta.violations(w, config, ee)
    box, target = config.workspace, ee + config.scale[:3] * w[:3]
    inside = (ee >= box.lower) & (ee <= box.upper)
    tol = 1e-9 * (1 + np.abs(target))
    assert ((target >= box.lower - tol) & (target <= box.upper + tol) | ~inside).all()  # kept inside the box
    # an axis already outside never moves further out
    assert ((target <= np.maximum(ee, box.upper) + tol) & (target >= np.minimum(ee, box.lower) - tol)).all()


@SETTINGS
@given(commands, hnp.arrays(np.float64, 7, elements=st.floats(-0.6, 0.6)))
def test_the_whole_shield_outputs_a_safe_delta_or_holds(command, offset) -> None:
    q = np.clip(HOME + offset, LOWER, UPPER)  # measured joints around the home pose
    ee = SHIELD.shadow.ee_position(q)
    assume(SHIELD.joint.config.hard_workspace.contains(ee))  # else reset faults (tested below)
    SHIELD.reset(q)
    step = SHIELD(command)
    out = step.command
    assert out.shape == (7,) and np.isfinite(out).all() and -1 <= out[6] <= 1
    delta = out[:6]
    assert within(delta, -SHIELD.config.max, SHIELD.config.max)
    assert not ee_delta.violations(delta, SHIELD.config, ee)
    if step.fallback is not None:
        assert step.fallback == "hold" and (delta == 0).all() and step.interventions
    arr = np.asarray(command, dtype=float) if not isinstance(command, (str, list)) else None
    if arr is not None and arr.shape == (7,) and np.isfinite(arr).all() and not step.intervened:
        # a safe command passes; corrections below MIN_INTERVENTION are not logged as interventions
        np.testing.assert_allclose(out, arr, rtol=0, atol=MIN_INTERVENTION)


def test_measured_joints_beyond_the_hard_limits_fault_and_are_never_clipped() -> None:
    q = (LOWER + UPPER) / 2
    SHIELD.reset(q)
    bad = q.copy()
    bad[5] = UPPER[5] + 0.1
    with pytest.raises(ShieldFault, match="joint 5"):
        SHIELD.check_measured(bad)
    with pytest.raises(ShieldFault, match="finite"):
        SHIELD.check_measured(np.full(7, np.nan))
    with pytest.raises(ShieldFault, match="moves at"):
        SHIELD.check_measured(q, np.full(7, 10.0))


def test_build_shield_takes_ee_delta_and_needs_its_scale(tmp_path) -> None:
    assert isinstance(SHIELD, EeDeltaShield) and SHIELD.stage_names == ["schema", "delta", "workspace"]
    np.testing.assert_allclose(SHIELD.config.scale, [0.05] * 3 + [0.5] * 3)
    text = Path(SPEC.path).read_text()
    start = text.index("[ee_delta]")
    path = tmp_path / "no_scale.toml"
    path.write_text(text[:start] + text[text.index("[backend]"):])
    with pytest.raises(ConfigError, match=r"ee_delta: control_mode"):
        build_shield(load_hardware(path))
    path.write_text(text.replace("scale = [0.05, 0.05, 0.05,", "scale = [0.05, -1, 0.05,"))
    with pytest.raises(ConfigError, match=r"ee_delta\.scale"):
        load_hardware(path)
