"""The shield's joint-space stages: pure functions of (command, last commanded motion, limits).

Every stage returns a :class:`Correction`: the corrected command and how much it changed it. Each one
confines the command to an interval per joint (schema aside), and clipping a point that lies in the
intersection of earlier intervals onto a new one keeps it in that intersection whenever the intersection
is non-empty; so applying the stages one after the other never loosens an earlier limit unless the limits
together are infeasible, which :func:`joint_violations` detects and the pipeline answers with a fallback.

Rates are finite differences of the *commanded* positions at the control period ``dt`` (as libfranka's
rate limiter and ros2_control's joint limiters do): v = (q - q_prev) / dt, a = (v - v_prev) / dt,
j = (a - a_prev) / dt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Float round-off allowance when checking a limit that a stage has just enforced (radians, rad/s, ...).
TOLERANCE = 1e-9


@dataclass(frozen=True)
class JointLimits:
    """Per-joint hard limits in SI units; ``margin`` shrinks the position range to the soft limits the
    shield enforces (the hard ones are where a *measured* state faults). ``None`` disables a rate stage."""

    lower: np.ndarray
    upper: np.ndarray
    dt: float
    margin: np.ndarray = field(default_factory=lambda: np.zeros(0))
    velocity: np.ndarray | None = None
    acceleration: np.ndarray | None = None
    jerk: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.lower)
        margin = np.zeros(n) if len(self.margin) == 0 else np.broadcast_to(self.margin, (n,))
        object.__setattr__(self, "margin", np.asarray(margin, float))
        for name in ("lower", "upper", "velocity", "acceleration", "jerk"):
            value = getattr(self, name)
            if value is None:
                continue
            value = np.asarray(value, float)
            if value.shape != (n,) or not np.isfinite(value).all():
                raise ValueError(f"joint limits: {name} must be {n} finite numbers, got {value!r}")
            if name not in ("lower", "upper") and (value <= 0).any():
                raise ValueError(f"joint limits: {name} must be > 0, got {value!r}")
            object.__setattr__(self, name, value)
        if not (self.dt > 0 and np.isfinite(self.dt)):
            raise ValueError(f"joint limits: dt must be a positive number of seconds, got {self.dt!r}")
        if (self.margin < 0).any() or (self.soft_lower > self.soft_upper).any():
            raise ValueError(f"joint limits: margin {self.margin} must be >= 0 and leave lower + margin <= "
                             f"upper - margin (lower {self.lower}, upper {self.upper})")

    @property
    def n(self) -> int:
        return len(self.lower)

    @property
    def soft_lower(self) -> np.ndarray:
        return self.lower + self.margin

    @property
    def soft_upper(self) -> np.ndarray:
        return self.upper - self.margin


@dataclass(frozen=True)
class Motion:
    """The last commanded position and its finite-difference velocity and acceleration."""

    q: np.ndarray
    v: np.ndarray
    a: np.ndarray

    @classmethod
    def at_rest(cls, q: np.ndarray) -> Motion:
        q = np.asarray(q, float).copy()
        return cls(q, np.zeros_like(q), np.zeros_like(q))

    def advance(self, q_next: np.ndarray, dt: float) -> Motion:
        """The motion after commanding ``q_next`` one period later."""
        v = (q_next - self.q) / dt
        return Motion(np.array(q_next, float), v, (v - self.v) / dt)


@dataclass(frozen=True)
class Correction:
    """A stage's output: the command, the largest change it made (0: no intervention), and whether it
    could produce a command at all (False: the pipeline falls back)."""

    command: np.ndarray
    amount: float = 0.0
    feasible: bool = True
    note: str = ""


def _clip(command: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> Correction:
    out = np.minimum(np.maximum(command, lo), hi)
    return Correction(out, float(np.max(np.abs(out - command), initial=0.0)))


def schema(command: object, last: Motion) -> Correction:
    """A float vector of the joint count with only finite entries; anything else cannot be corrected
    meaningfully, so the command becomes the last commanded position and the step is infeasible."""
    try:
        arr = np.asarray(command, dtype=float)
    except (TypeError, ValueError):
        return Correction(last.q.copy(), float("inf"), False, "not numeric")
    if arr.shape != last.q.shape:
        return Correction(last.q.copy(), float("inf"), False, f"shape {arr.shape}, expected {last.q.shape}")
    if not np.isfinite(arr).all():
        return Correction(last.q.copy(), float("inf"), False, "NaN or inf")
    return Correction(arr.copy())


def braking_step(room: np.ndarray, acceleration: np.ndarray, dt: float) -> np.ndarray:
    """The largest step x towards a limit ``room`` away from which the joint can still stop in time:
    v^2 / (2 A) + v dt <= room - x with v = x / dt. If one step satisfies it, decelerating by A dt in the next
    one satisfies it again, so a command inside this bound never runs into the limit."""
    a = 1.0 / (2.0 * acceleration * dt * dt)
    return (np.sqrt(1.0 + a * np.maximum(room, 0.0)) - 1.0) / a


def position_bounds(limits: JointLimits, last: Motion) -> tuple[np.ndarray, np.ndarray]:
    """The soft limits, tightened to what the acceleration limit can still stop within. A last command
    beyond a soft limit (a start in the margin band) may stay there or move back, never further out."""
    lo, hi = np.minimum(limits.soft_lower, last.q), np.maximum(limits.soft_upper, last.q)
    if limits.acceleration is not None:
        hi = np.minimum(hi, last.q + braking_step(limits.soft_upper - last.q, limits.acceleration, limits.dt))
        lo = np.maximum(lo, last.q - braking_step(last.q - limits.soft_lower, limits.acceleration, limits.dt))
    return lo, hi


def velocity_bounds(limits: JointLimits, last: Motion) -> tuple[np.ndarray, np.ndarray]:
    step = limits.velocity * limits.dt  # type: ignore[operator]
    return last.q - step, last.q + step


def acceleration_bounds(limits: JointLimits, last: Motion) -> tuple[np.ndarray, np.ndarray]:
    dt = limits.dt
    dv = limits.acceleration * dt  # type: ignore[operator]
    return last.q + (last.v - dv) * dt, last.q + (last.v + dv) * dt


def jerk_bounds(limits: JointLimits, last: Motion) -> tuple[np.ndarray, np.ndarray]:
    dt = limits.dt
    da = limits.jerk * dt  # type: ignore[operator]
    base = last.q + last.v * dt
    return base + (last.a - da) * dt * dt, base + (last.a + da) * dt * dt


BOUNDS = {
    "position": position_bounds,
    "velocity": velocity_bounds,
    "acceleration": acceleration_bounds,
    "jerk": jerk_bounds,
}


def enabled_bounds(limits: JointLimits) -> list[str]:
    """The joint stages these limits enable, in pipeline order."""
    return ["position"] + [name for name in ("velocity", "acceleration", "jerk") if getattr(limits, name) is not None]


def clip_stage(name: str):
    """The stage that clips a command into the interval ``BOUNDS[name]`` gives for the last motion."""
    bounds = BOUNDS[name]

    def stage(command: np.ndarray, last: Motion, limits: JointLimits) -> Correction:
        return _clip(command, *bounds(limits, last))

    stage.__name__ = f"{name}_stage"
    stage.__doc__ = f"Clip the command into the {name} interval relative to the last commanded motion."
    return stage


position_stage = clip_stage("position")
velocity_stage = clip_stage("velocity")
acceleration_stage = clip_stage("acceleration")
jerk_stage = clip_stage("jerk")


def feasible_box(limits: JointLimits, last: Motion) -> tuple[np.ndarray, np.ndarray]:
    """The intersection of every enabled joint interval (lower > upper on a joint: no command satisfies all)."""
    lo, hi = position_bounds(limits, last)
    for name in enabled_bounds(limits)[1:]:
        b_lo, b_hi = BOUNDS[name](limits, last)
        lo, hi = np.maximum(lo, b_lo), np.minimum(hi, b_hi)
    return lo, hi


def joint_violations(command: np.ndarray, last: Motion, limits: JointLimits,
                     tolerance: float = TOLERANCE) -> list[str]:
    """Names of the enabled joint limits ``command`` breaks (empty: it satisfies all of them)."""
    if command.shape != last.q.shape or not np.isfinite(command).all():
        return ["schema"]
    broken = []
    for name in enabled_bounds(limits):
        lo, hi = BOUNDS[name](limits, last)
        scale = 1.0 + np.abs(command)
        if (command < lo - tolerance * scale).any() or (command > hi + tolerance * scale).any():
            broken.append(name)
    return broken


def decelerate(last: Motion, limits: JointLimits) -> np.ndarray:
    """The fallback command: slow every joint towards rest as fast as the acceleration limit allows (an
    immediate stop without one), never past the hard position limits."""
    if limits.acceleration is None:
        return last.q.copy()
    dv = limits.acceleration * limits.dt
    v = last.v - np.clip(last.v, -dv, dv)
    return np.clip(last.q + v * limits.dt, limits.lower, limits.upper)
