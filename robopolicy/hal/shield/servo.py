"""The joints' position servo, identified on the shadow model, and the stage that keeps where it carries the
joints inside the hard limits.

Why: the joint stages bound the *commanded* positions, but a position servo (a MuJoCo position actuator, a drive's
position loop) is a second-order system that overshoots its target. A lightly damped one, commanded to a target at
the soft limit while it still moves fast, carries the joint past the hard limit: push_puck's pusher (kp 60 N/m on
0.2 kg, damping 2 N s/m) went up to ~5 mm beyond its end stops under adversarial commands that the joint stages
had all let through. A braking bound on the *commands* cannot see this; the servo's state can.

For a linear, decoupled servo the motion that follows a target ``u`` held from the measured position ``x0`` and
velocity ``v0`` is, at every simulator step ``i``,

    x_i = u + c_i (x0 - u) + s_i v0 = (1 - c_i) u + c_i x0 + s_i v0,

linear in ``u``. So "every x_i inside [lower, upper]" is an interval of targets per joint, found in closed form:
a stopping-distance-aware position limit that knows the servo's own braking, not an assumed deceleration. It is
invariant: a target inside it is inside it again one control period later (its motion continues the one that
was checked), so a hold of the last target always stays feasible while the servo behaves as modelled.

The responses ``c``, ``s`` (and those of the velocity) are not a formula: they are measured by simulating the
shadow model, joint by joint, at its own timestep with contacts and joint limits disabled, and the model is
accepted only if it is what the interval assumes (each joint driven by one position actuator whose target is
the command, decoupled from the others, at rest at its target, settling within ``MAX_SECONDS``). For a simulated
robot this is the simulator's own response, exact up to round-off; for a real one it is only as good as the
MJCF's actuator model. Forces outside the model (contacts, a person) are not foreseen: the measured state is
re-read every period and checked against the hard limits, which faults.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import mujoco
import numpy as np

from robopolicy.hal.shield.stages import Correction

log = logging.getLogger(__name__)

MAX_SECONDS = 30.0  # a servo that has not settled to SETTLED of a disturbance by then is not modelled
SETTLED = 1e-6
PROBE = (1e-2, 1e-1)  # the identification's position offset (m or rad) and velocity (per s); the model is linear
LINEAR_TOLERANCE = 1e-6  # relative: a response that is not this linear, decoupled and at rest is not a servo


@dataclass(frozen=True)
class Servo:
    """The sampled responses of each joint's servo, one row per simulator step after a target is set.

    ``c``/``s``: position response to an offset from the target and to a velocity; ``cv``/``sv``: the
    velocity's. ``period_steps``: simulator steps per control period. Shapes (steps, joints).
    """

    c: np.ndarray
    s: np.ndarray
    cv: np.ndarray
    sv: np.ndarray
    period_steps: int
    timestep: float

    def predict(self, x0: np.ndarray, v0: np.ndarray, u: np.ndarray,
                steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Position and velocity ``steps`` simulator steps (default: one control period) after target ``u``
        is set at position ``x0`` and velocity ``v0``."""
        i = min(steps or self.period_steps, len(self.c)) - 1
        e = x0 - u
        return u + self.c[i] * e + self.s[i] * v0, self.cv[i] * e + self.sv[i] * v0

    def limit(self, lower: np.ndarray, upper: np.ndarray) -> ServoLimit:
        """The interval of targets that keep the motion inside [lower, upper] (see :class:`ServoLimit`)."""
        return ServoLimit.build(self, np.asarray(lower, float), np.asarray(upper, float))


@dataclass(frozen=True)
class ServoLimit:
    """Every step's x_i in [lower, upper], as bounds on the target: with b_i = 1 - c_i (the step response),
    b_i > 0 gives (lower - c_i x0 - s_i v0) / b_i <= u <= (upper - c_i x0 - s_i v0) / b_i (flipped for b_i < 0;
    a step with b_i = 0 is inside or not whatever the target). Each bound is a_i - p_i x0 - r_i v0, with the
    coefficients computed once, so an interval costs a few vector operations per step."""

    hi: tuple[np.ndarray, np.ndarray, np.ndarray]  # a, p, r (joints, steps): u <= min_i (a_i - p_i x0 - r_i v0)
    lo: tuple[np.ndarray, np.ndarray, np.ndarray]  # u >= max_i (a_i - p_i x0 - r_i v0)
    flat: tuple[np.ndarray, np.ndarray, np.ndarray]  # steps where the target has no weight: c_i, s_i, joint
    lower: np.ndarray
    upper: np.ndarray

    @classmethod
    def build(cls, servo: Servo, lower: np.ndarray, upper: np.ndarray) -> ServoLimit:
        b = 1.0 - servo.c
        pos, neg = b > LINEAR_TOLERANCE, b < -LINEAR_TOLERANCE
        safe_b = np.where(pos | neg, b, 1.0)
        # per joint: the bound from `upper` where b > 0 and from `lower` where b < 0 caps the target from above
        a_hi, a_lo = np.where(pos, upper, lower) / safe_b, np.where(pos, lower, upper) / safe_b
        used = pos | neg
        p, r = np.where(used, servo.c / safe_b, 0.0), np.where(used, servo.s / safe_b, 0.0)

        def rows(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:  # (joints, steps): a contiguous row per joint
            return tuple(np.ascontiguousarray(a.T) for a in arrays)

        hi, lo = rows(np.where(used, a_hi, np.inf), p, r), rows(np.where(used, a_lo, -np.inf), p, r)
        steps, joints = np.nonzero(~used)
        return cls(hi, lo, (servo.c[steps, joints], servo.s[steps, joints], joints),  # type: ignore[arg-type]
                   lower, upper)

    def interval(self, x0: np.ndarray, v0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The targets whose held motion from (x0, v0) stays inside [lower, upper] at every step and settles
        there; lower > upper on a joint: no target does."""
        (a, p, r), (al, pl, rl) = self.hi, self.lo
        x, v = x0[:, None], v0[:, None]
        hi = np.minimum((a - p * x - r * v).min(axis=1), self.upper)
        lo = np.maximum((al - pl * x - rl * v).max(axis=1), self.lower)
        c, s, joints = self.flat
        if len(joints):
            rest = c * x0[joints] + s * v0[joints]
            stuck = joints[(rest > self.upper[joints]) | (rest < self.lower[joints])]
            hi[stuck] = -np.inf
        return lo, hi


def servo_stage(command: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> Correction:
    """Clip the command into the servo's interval (``ServoLimit.interval``); infeasible when it is empty."""
    if (lo > hi).any():
        return Correction(command, float("inf"), False, "no target keeps the servo inside the hard limits")
    out = np.minimum(np.maximum(command, lo), hi)
    return Correction(out, float(np.max(np.abs(out - command), initial=0.0)))


def identify_servo(mjcf: str, joints: list[str], period_s: float) -> Servo | None:
    """The servo model of ``joints`` in ``mjcf`` (see the module docstring), or None when the model does not
    drive them with decoupled position servos (motors, a joint controller outside the model). A control period
    that is not a whole number of the model's timesteps is a ValueError: the prediction would not line up."""
    model = mujoco.MjModel.from_xml_path(str(mjcf))
    ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name) for name in joints]
    actuators = [_position_actuator(model, j) for j in ids]
    if any(a is None for a in actuators) or len(set(actuators)) != len(actuators):
        return None
    steps = period_s / model.opt.timestep
    if abs(steps - round(steps)) > 1e-6 * steps:
        raise ValueError(f"control_rate_hz: the control period {period_s:g} s is not a whole number of "
                         f"{mjcf}'s timestep {model.opt.timestep:g} s, which its position servos are modelled at")
    model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_CONTACT | mujoco.mjtDisableBit.mjDSBL_LIMIT
    data = mujoco.MjData(model)
    qadr, vadr = model.jnt_qposadr[ids], model.jnt_dofadr[ids]
    n_max = math.ceil(MAX_SECONDS / model.opt.timestep)
    columns = []
    for k in range(len(actuators)):
        responses = []
        for dx, dv, du in ((PROBE[0], 0.0, 0.0), (0.0, PROBE[1], 0.0), (0.0, 0.0, PROBE[0])):
            response = _respond(model, data, qadr, vadr, actuators, k, dx, dv, du, n_max)
            if response is None:
                log.warning("shield: %s's servo on %s does not settle at its target within %g s; not modelled",
                            mjcf, joints[k], MAX_SECONDS)
                return None
            responses.append(response)
        (xe, ve), (xv, vv), (xu, vu) = responses
        n = min(len(xe), len(xv), len(xu))
        c, s = xe[:n] / PROBE[0], xv[:n] / PROBE[1]
        # the target is the command (x settles at u: x_i = (1 - c_i) u), and no other degree of freedom moves
        others = np.delete(np.stack([ve[:n], vv[:n], vu[:n]]), vadr[k], axis=2)
        step_ok = np.allclose(xu[:n] / PROBE[0], 1.0 - c, atol=LINEAR_TOLERANCE)
        if not step_ok or np.abs(others).max(initial=0.0) > LINEAR_TOLERANCE * PROBE[1]:
            log.info("shield: %s's actuator on %s is not a decoupled position servo of the command; "
                     "its motion is not modelled", mjcf, joints[k])
            return None
        columns.append((c, s, ve[:n, vadr[k]] / PROBE[0], vv[:n, vadr[k]] / PROBE[1]))
    n = min(len(col[0]) for col in columns)
    c, s, cv, sv = (np.stack([col[i][:n] for col in columns], axis=1) for i in range(4))
    return Servo(c, s, cv, sv, int(round(steps)), float(model.opt.timestep))


def _position_actuator(model: mujoco.MjModel, joint: int) -> int | None:
    """The one actuator on ``joint`` if it is a MuJoCo position servo (gain kp, bias -kp q - kv qdot, gear 1,
    no activation dynamics, no force limit); else None."""
    if joint < 0:
        return None
    found = [i for i in range(model.nu)
             if model.actuator_trntype[i] == mujoco.mjtTrn.mjTRN_JOINT and model.actuator_trnid[i, 0] == joint]
    if len(found) != 1:
        return None
    i = found[0]
    kp, bias = model.actuator_gainprm[i, 0], model.actuator_biasprm[i]
    servo = (model.actuator_gaintype[i] == mujoco.mjtGain.mjGAIN_FIXED
             and model.actuator_biastype[i] == mujoco.mjtBias.mjBIAS_AFFINE
             and model.actuator_dyntype[i] == mujoco.mjtDyn.mjDYN_NONE
             and kp > 0 and bias[0] == 0 and bias[1] == -kp and model.actuator_gear[i, 0] == 1
             and not model.actuator_forcelimited[i])
    return i if servo else None


def _respond(model, data, qadr, vadr, actuators, k: int, dx: float, dv: float, du: float,
             n_max: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Joint ``k``'s offset from the rest state (every commanded joint at rest at its target, at the model's
    qpos0) and every degree of freedom's velocity over time, after joint ``k`` is displaced by ``dx``, given
    velocity ``dv`` or its target moved by ``du``; None when the motion has not settled within ``n_max`` steps."""
    mujoco.mj_resetData(model, data)
    q0 = model.qpos0[qadr].copy()
    data.ctrl[actuators] = q0
    data.ctrl[actuators[k]] += du
    data.qpos[qadr[k]] += dx
    data.qvel[vadr[k]] += dv
    xs, vs = [], []
    scale = max(dx, dv * model.opt.timestep, du)
    for i in range(n_max):
        mujoco.mj_step(model, data)
        xs.append(data.qpos[qadr[k]] - q0[k])
        vs.append(data.qvel.copy())
        # settled: the offset from the final target and every velocity small for a whole second
        if i % 100 == 99 and i * model.opt.timestep > 1.0:
            window = int(1.0 / model.opt.timestep)
            x, v = np.array(xs[-window:]) - du, np.array(vs[-window:])
            if max(np.abs(x).max(), np.abs(v).max() * model.opt.timestep) < SETTLED * scale:
                return np.array(xs), np.array(vs)
    return None
