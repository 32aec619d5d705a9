"""The servo stage (robopolicy/hal/shield/servo.py) on push_puck's pusher, whose lightly damped position servo
overshoots: the identified response is the simulator's own; every target the interval allows keeps the motion
inside the limits, the interval is tight and invariant; for arbitrary commands (NaN, +-inf, huge, bang-bang) the
shield keeps the simulated pusher inside its hard limits at every simulator step; and adversarial chunks for
thousands of steps on the mujoco backend never take the simulator's qpos out of them."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from robopolicy.hal.mujoco_backend import MujocoBackend
from robopolicy.hal.shield import stages
from robopolicy.hal.shield.hardware import ShieldedBackend, ShieldOptions, build_shield
from robopolicy.hal.shield.servo import identify_servo, servo_stage
from robopolicy.hal.spec import load_hardware

SPEC = load_hardware("push_puck_sim")
SERVO = identify_servo(SPEC.mjcf, SPEC.joints, SPEC.period_s)
LOWER, UPPER = np.array(SPEC.limits.position_lower), np.array(SPEC.limits.position_upper)
LIMIT = SERVO.limit(LOWER, UPPER)
V_MAX = np.array(SPEC.limits.measured_velocity) * (1 + ShieldOptions().velocity_tolerance)  # beyond: a fault
SETTINGS = settings(max_examples=60, deadline=None)

position = hnp.arrays(np.float64, 2, elements=st.floats(-0.25, 0.25))
velocity = hnp.arrays(np.float64, 2, elements=st.floats(-2.5, 2.5))
anything = st.floats(allow_nan=True, allow_infinity=True, width=64)
commands = st.one_of(hnp.arrays(np.float64, 2, elements=anything), hnp.arrays(np.float64, 2, elements=st.floats(-5, 5)),
                     hnp.arrays(np.float64, 2, elements=st.sampled_from([-1e3, -0.25, 0.25, 1e3])))


class Pusher:
    """push_puck's scene with contacts (the puck out of the way) and the end stops off: the servo as the simulator
    moves it, wherever that is (the end stops would only push a pusher beyond them back)."""

    def __init__(self) -> None:
        self.model = mujoco.MjModel.from_xml_path(SPEC.mjcf)
        self.model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_CONTACT | mujoco.mjtDisableBit.mjDSBL_LIMIT
        self.data = mujoco.MjData(self.model)

    def start(self, x0: np.ndarray, v0: np.ndarray) -> None:
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:2], self.data.qvel[:2] = x0, v0

    def hold(self, u: np.ndarray, steps: int) -> np.ndarray:
        """The pusher's positions at every simulator step while target ``u`` is held."""
        self.data.ctrl[:] = u
        out = np.empty((steps, 2))
        for i in range(steps):
            mujoco.mj_step(self.model, self.data)
            out[i] = self.data.qpos[:2]
        return out


PUSHER = Pusher()


def test_the_servo_is_identified_from_the_model_and_only_there():
    assert SERVO is not None and SERVO.period_steps == 10 and SERVO.timestep == 0.005
    # a position actuator kp 60 N/m on 0.2 kg, damping 2 N s/m: about the continuous servo's ~39 % overshoot
    zeta = 2.0 / (2.0 * math.sqrt(60.0 * 0.2))
    assert (1 - SERVO.c).max() == pytest.approx(1 + math.exp(-math.pi * zeta / math.sqrt(1 - zeta**2)), rel=0.03)
    panda = load_hardware("panda_sim")  # torque motors driven by a controller outside the model: no servo model
    assert identify_servo(panda.mjcf, panda.joints, panda.period_s) is None
    assert build_shield(panda, ShieldOptions(collision=False)).config.servo is None
    assert build_shield(SPEC).config.servo is not None and build_shield(SPEC, ShieldOptions(servo=False)).config.servo \
        is None
    with pytest.raises(ValueError, match=r"control_rate_hz: the control period 0.0123 s is not a whole number"):
        identify_servo(SPEC.mjcf, SPEC.joints, 0.0123)


@pytest.mark.parametrize("actuator", [
    '<motor joint="a" gear="1"/>',  # a torque motor
    '<position joint="a" kp="50" gear="2"/>',  # the target is not the command
    '<position joint="a" kp="50" forcerange="-1 1" forcelimited="true"/>',  # saturates: brakes less than modelled
])
def test_actuators_that_are_not_plain_position_servos_are_not_modelled(tmp_path, actuator):
    path = tmp_path / "m.xml"
    path.write_text(f"""<mujoco><worldbody><body><joint name="a" type="slide" axis="1 0 0" damping="1"/>
        <geom type="sphere" size="0.1" mass="1"/></body></worldbody><actuator>{actuator}</actuator></mujoco>""")
    assert identify_servo(str(path), ["a"], 0.02) is None


def test_coupled_joints_are_not_modelled(tmp_path):
    path = tmp_path / "chain.xml"  # a double pendulum: each joint's servo moves the other
    path.write_text("""<mujoco><option gravity="0 0 0"/><worldbody><body><joint name="a" axis="0 1 0" damping="1"/>
        <geom type="capsule" fromto="0 0 0 0.5 0 0" size="0.05" mass="1"/><body pos="0.5 0 0">
        <joint name="b" axis="0 1 0" damping="1"/><geom type="capsule" fromto="0 0 0 0.5 0 0" size="0.05" mass="1"/>
        </body></body></worldbody><actuator><position joint="a" kp="50"/><position joint="b" kp="50"/></actuator>
        </mujoco>""")
    assert identify_servo(str(path), ["a", "b"], 0.02) is None
    assert identify_servo(str(path), ["a"], 0.02) is None


@SETTINGS
@given(position, velocity, position, st.integers(1, 30))
def test_the_prediction_is_the_simulators_own_motion(x0, v0, u, periods):
    PUSHER.start(x0, v0)
    x, v = x0, v0
    for _ in range(periods):
        x, v = SERVO.predict(x, v, u)
    steps = periods * SERVO.period_steps
    np.testing.assert_allclose(PUSHER.hold(u, steps)[-1], x, atol=1e-9)
    np.testing.assert_allclose(PUSHER.data.qvel[:2], v, atol=1e-8)
    np.testing.assert_allclose(SERVO.predict(x0, v0, u, steps)[0], x, atol=1e-9)


@SETTINGS
@given(position, velocity, position)
def test_targets_in_the_interval_keep_the_motion_inside_and_the_interval_is_tight(x0, v0, u):
    lo, hi = LIMIT.interval(x0, v0)
    if (lo > hi).any():  # no target can stop it in time: only from states the shield never leads to
        assert servo_stage(u, lo, hi).feasible is False
        return
    inside = np.clip(u, lo, hi)
    PUSHER.start(x0, v0)
    motion = PUSHER.hold(inside, len(SERVO.c))
    assert (motion >= LOWER - 1e-9).all() and (motion <= UPPER + 1e-9).all()
    for j in range(2):  # one millimetre beyond a bound that cuts into the limits takes the motion outside
        for bound, step, limit in ((hi, 1e-3, UPPER), (lo, -1e-3, LOWER)):
            if abs(bound[j] - limit[j]) > 1e-6:
                beyond = inside.copy()
                beyond[j] = bound[j] + step
                x = beyond[j] + SERVO.c[:, j] * (x0[j] - beyond[j]) + SERVO.s[:, j] * v0[j]
                assert x.max() > UPPER[j] or x.min() < LOWER[j]


@SETTINGS
@given(position, velocity, position, st.integers(1, 40))
def test_a_target_in_the_interval_is_in_it_again_periods_later(x0, v0, u, periods):
    lo, hi = LIMIT.interval(x0, v0)
    if (lo > hi).any():
        return
    u = np.clip(u, lo, hi)
    x, v = SERVO.predict(x0, v0, u, periods * SERVO.period_steps)
    lo, hi = LIMIT.interval(x, v)
    assert (u >= lo - 1e-9).all() and (u <= hi + 1e-9).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(commands, st.booleans()), min_size=1, max_size=40), st.sampled_from(["decelerate", "hold"]),
       position)
def test_the_shield_keeps_the_simulated_pusher_inside_for_any_commands(sequence, fallback, start):
    """The joint stages and the servo stage (no shadow-model stages: the servo needs none), measured every period
    or, where `measured` is False, predicted: the simulator's pusher stays inside the hard limits at every step."""
    shield = build_shield(SPEC, ShieldOptions(workspace=False, collision=False, fallback=fallback))
    start = np.clip(start, shield.limits.soft_lower, shield.limits.soft_upper)
    PUSHER.start(start, np.zeros(2))
    shield.reset(start, np.zeros(2))
    for command, measured in sequence:
        last, box = shield.motion, shield.servo_interval()
        step = shield(command)
        q = step.command
        assert np.isfinite(q).all()
        if step.fallback is None:  # combined with the joint stages, the servo stage loosened none of them
            assert (q >= box[0] - 1e-9).all() and (q <= box[1] + 1e-9).all()
            assert stages.joint_violations(q, last, shield.limits) == []
        elif step.fallback == "hold":
            np.testing.assert_array_equal(q, last.q)
        motion = PUSHER.hold(q, SERVO.period_steps)
        assert (motion >= LOWER).all() and (motion <= UPPER).all()
        if measured:
            shield.check_measured(PUSHER.data.qpos[:2].copy(), PUSHER.data.qvel[:2].copy())


def adversarial_chunk(rng: np.random.Generator, kind: int, n: int) -> np.ndarray:
    """n commands of one kind: uniform beyond the arena, bang-bang, huge, NaN/inf, or a square wave of half-period
    1 to 10 steps (the servo resonates near 4), with now and then a non-finite command."""
    if kind == 0:
        out = rng.uniform(-1.0, 1.0, (n, 2))
    elif kind == 1:
        out = np.where(rng.random((n, 2)) < 0.5, -5.0, 5.0)
    elif kind == 2:
        out = rng.normal(0.0, 1e6, (n, 2))
    elif kind == 3:
        out = np.where(rng.random((n, 2)) < 0.5, np.nan, np.inf) * np.sign(rng.normal(size=(n, 2)))
    else:
        half = kind - 3
        out = np.where((np.arange(n) // half % 2 == 0)[:, None], 1.0, -1.0) * np.array([1.0, rng.choice([-1, 1])])
    bad = rng.random(n) < 0.03
    out[bad] = np.nan
    return out


def test_adversarial_chunks_on_the_mujoco_backend_never_leave_the_hard_limits():
    """3000 shielded steps of adversarial 16-step chunks on the mujoco backend (the task's scene, the puck and its
    contacts included, the default shield): the simulator's pusher qpos, checked at every simulator step through
    MuJoCo's control callback, never leaves the hard limits, and no reading faults. The commands are hard enough
    to matter: the servo stage corrects some and the pusher comes within a centimetre of its end stops."""
    backend = MujocoBackend(SPEC, realtime=False)
    backend.connect()
    backend.arm()
    robot = ShieldedBackend(backend, build_shield(SPEC))
    rng = np.random.default_rng(0)
    extremes = np.array([np.inf, -np.inf])
    qadr = backend._qadr

    def every_step(model, data) -> None:
        q = data.qpos[qadr]
        extremes[:] = min(extremes[0], q.min()), max(extremes[1], q.max())

    steps, servo, peak_v = 0, 0, 0.0
    mujoco.set_mjcb_control(every_step)
    try:
        for episode in range(20):
            backend.reset_scene(episode)
            robot.start()
            for _ in range(150 // 16 + 1):
                for command in adversarial_chunk(rng, int(rng.integers(0, 14)), 16):
                    robot.send(command)
                    obs = robot.read()  # the shield faults on a measured state beyond the hard limits
                    peak_v = max(peak_v, float(np.abs(obs.velocity).max()))
                    steps += 1
            servo += robot.shield.counts.by_stage["servo"]
    finally:
        mujoco.set_mjcb_control(None)
        backend.close()
    assert steps >= 3000
    assert extremes[0] >= LOWER.min() and extremes[1] <= UPPER.max(), extremes
    assert servo > 0 and peak_v > SPEC.limits.velocity[0] and max(-extremes[0], extremes[1]) > 0.24
