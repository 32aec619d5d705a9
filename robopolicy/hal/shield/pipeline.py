"""The shield: the ordered pipeline of stages between the executor and a backend, with its fallback.

Order: schema/finite -> joint position (soft limits) -> velocity -> acceleration -> jerk (relative to the last
commanded motion) -> servo (where the position servo carries the joints from their measured state, when the
shadow model drives them with position actuators; ``servo.py``) -> Cartesian workspace (forward kinematics on the
shadow model) -> collision (shadow model) -> optional QP projection -> final check of every enabled limit ->
fallback. The fallback (decelerate as the
acceleration limit allows, or hold the last commanded position) is taken when a stage finds no command or the
final check finds one limit broken, so the output either satisfies every enabled limit or is the fallback.
A *measured* state outside the hard limits is never clipped: :meth:`Shield.check_measured` raises
:class:`ShieldFault` and the executor faults.

Every step's interventions (raw command, shielded command, stage, amount) go to a bounded log and are counted
per episode. Commands are absolute joint positions; in joint-velocity mode the shield works on the position the
velocity would reach after one period and converts back.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from robopolicy.hal.shield import stages
from robopolicy.hal.shield.kinematics import ShadowModel, Workspace, collision_stage, workspace_stage
from robopolicy.hal.shield.qp import qp_stage, solver_name
from robopolicy.hal.shield.servo import Servo, servo_stage
from robopolicy.hal.shield.stages import Correction, JointLimits, Motion

GRIPPER_RANGE = (-1.0, 1.0)
# corrections smaller than this (rad) are float round-off (e.g. a float32 round trip), not interventions;
# the command is still corrected
MIN_INTERVENTION = 1e-6


class ShieldFault(RuntimeError):
    """The measured state is outside the hard limits (or not finite): fault, never clip."""


@dataclass(frozen=True)
class ShieldConfig:
    """What the shield enforces. ``workspace``/``collision`` need a shadow model; ``qp`` adds the projection.

    ``measured_tolerance``: how far (rad; metres for the workspace) a measured state may sit beyond a hard limit
    before it is a fault (sensor noise). ``hard_velocity``: the velocity a measured state faults beyond, when
    commands are held to a tighter ``limits.velocity`` (default: the same); ``velocity_tolerance`` (a fraction)
    allows for velocity estimates and a joint controller's tracking overshoot on top of it. ``hard_workspace``:
    the box a measured end effector faults outside of, when commands are held to a smaller ``workspace``.
    ``servo``: the joints' position servo (joint_position commands only): every command keeps the motion it
    starts from the last measured (or, between measurements, predicted) joint state inside the hard limits
    shrunk by ``servo_margin`` (rad or m).
    """

    limits: JointLimits
    control_mode: Literal["joint_position", "joint_velocity"] = "joint_position"
    workspace: Workspace | None = None
    collision: bool = False
    qp: bool = False
    qp_gamma: float = 0.5
    fallback: Literal["decelerate", "hold"] = "decelerate"
    gripper: bool = False
    measured_tolerance: float = 0.01
    hard_velocity: np.ndarray | None = None
    velocity_tolerance: float = 0.01
    hard_workspace: Workspace | None = None
    servo: Servo | None = None
    servo_margin: float = 0.001

    def __post_init__(self) -> None:
        if self.control_mode not in ("joint_position", "joint_velocity"):
            raise ValueError(f"shield: control mode {self.control_mode!r} is not shielded in joint space; "
                             "expected joint_position or joint_velocity")
        if self.servo is not None and self.control_mode != "joint_position":
            raise ValueError("shield: a position servo model applies to joint_position commands only")
        if self.servo is not None and not 0.0 <= 2 * self.servo_margin < float(np.min(self.limits.upper
                                                                                  - self.limits.lower)):
            raise ValueError(f"shield: servo_margin must be >= 0 and leave a range, got {self.servo_margin}")
        if self.fallback not in ("decelerate", "hold"):
            raise ValueError(f"shield: fallback must be 'decelerate' or 'hold', got {self.fallback!r}")


@dataclass(frozen=True)
class Intervention:
    stage: str
    amount: float
    note: str = ""


@dataclass(frozen=True)
class ShieldStep:
    """One shielded step: ``command`` is what goes to the backend; ``fallback`` is None, "decelerate" or "hold"."""

    raw: np.ndarray
    command: np.ndarray
    interventions: tuple[Intervention, ...] = ()
    fallback: str | None = None

    @property
    def intervened(self) -> bool:
        return bool(self.interventions) or self.fallback is not None


@dataclass
class EpisodeCounts:
    """Per-episode intervention counts: steps, steps with any intervention, per stage, fallbacks."""

    steps: int = 0
    intervened: int = 0
    by_stage: Counter = field(default_factory=Counter)
    fallbacks: Counter = field(default_factory=Counter)

    def add(self, step: ShieldStep) -> None:
        self.steps += 1
        self.intervened += int(step.intervened)
        for item in step.interventions:
            self.by_stage[item.stage] += 1
        if step.fallback:
            self.fallbacks[step.fallback] += 1

    def to_dict(self) -> dict:
        return {"steps": self.steps, "intervened": self.intervened, "rate": self.intervened / max(self.steps, 1),
                "by_stage": dict(self.by_stage), "fallbacks": dict(self.fallbacks)}


class Shield:
    """Stateful wrapper of the pure stages: it keeps the last commanded motion and the logs."""

    def __init__(self, config: ShieldConfig, shadow: ShadowModel | None = None, log_size: int = 10_000) -> None:
        if (config.workspace is not None or config.collision) and shadow is None:
            raise ValueError("shield: the workspace and collision stages need a shadow model")
        self.config = config
        self.shadow = shadow
        self.log: deque[ShieldStep] = deque(maxlen=log_size)
        self.counts = EpisodeCounts()
        self._motion: Motion | None = None
        # the servo's joint state (position, velocity): measured, or predicted since the last measurement
        self._servo_state: tuple[np.ndarray, np.ndarray] | None = None
        self._servo_box: tuple[np.ndarray, np.ndarray] | None = None
        m = config.servo_margin
        self._servo_limit = None if config.servo is None else config.servo.limit(config.limits.lower + m,
                                                                                 config.limits.upper - m)

    @property
    def limits(self) -> JointLimits:
        return self.config.limits

    @property
    def motion(self) -> Motion:
        if self._motion is None:
            raise RuntimeError("shield: call reset(measured_position) before shielding commands")
        return self._motion

    @property
    def stage_names(self) -> list[str]:
        names = ["schema", *stages.enabled_bounds(self.limits)] + ["servo"] * (self.config.servo is not None)
        names += ["workspace"] * (self.config.workspace is not None) + ["collision"] * self.config.collision
        return names + [f"qp[{solver_name(self.config.workspace)}]"] * self.config.qp

    # ---- measured state ---------------------------------------------------------------------------------

    def check_measured(self, position: np.ndarray, velocity: np.ndarray | None = None) -> None:
        """Raise :class:`ShieldFault` if the measured joint state is non-finite or beyond a hard limit; a state
        that passes is the servo stage's new starting point (without ``velocity``, the predicted one is kept)."""
        lim, tol = self.limits, self.config.measured_tolerance
        q = np.asarray(position, float)
        if q.shape != (lim.n,) or not np.isfinite(q).all():
            raise ShieldFault(f"measured joint position {q.tolist()} is not {lim.n} finite numbers")
        outside = np.flatnonzero((q < lim.lower - tol) | (q > lim.upper + tol))
        if len(outside):
            j = int(outside[0])
            raise ShieldFault(f"measured joint {j} at {q[j]:.4f} rad is outside its hard limits "
                              f"[{lim.lower[j]:.4f}, {lim.upper[j]:.4f}]")
        v_max = self.config.hard_velocity if self.config.hard_velocity is not None else lim.velocity
        if velocity is not None and v_max is not None:
            v = np.asarray(velocity, float)
            if v.shape != (lim.n,) or not np.isfinite(v).all():
                raise ShieldFault(f"measured joint velocity {v.tolist()} is not {lim.n} finite numbers")
            fast = np.flatnonzero(np.abs(v) > v_max * (1 + self.config.velocity_tolerance))
            if len(fast):
                j = int(fast[0])
                raise ShieldFault(f"measured joint {j} moves at {v[j]:.4f} rad/s, beyond its limit {v_max[j]:.4f}")
        box = self.config.hard_workspace or self.config.workspace
        if box is not None and self.shadow is not None:
            ee = self.shadow.ee_position(q)
            if not box.contains(ee, tol):
                raise ShieldFault(f"measured end effector at {np.round(ee, 4).tolist()} m is outside the workspace "
                                  f"{box.lower.tolist()} .. {box.upper.tolist()}")
        if self.config.servo is not None and self._servo_state is not None:
            v = np.asarray(velocity, float) if velocity is not None else self._servo_state[1]
            self._set_servo_state(q.copy(), v.copy())

    def reset(self, position: np.ndarray, velocity: np.ndarray | None = None) -> None:
        """Start an episode at the measured position (checked first), commanded to stay there; the servo starts
        from ``velocity`` (default: at rest). Clears the episode counts."""
        q = np.asarray(position, float)
        self._servo_state = None
        self.check_measured(q, velocity)
        self._motion = Motion.at_rest(np.clip(q, self.limits.lower, self.limits.upper))
        v = np.zeros(self.limits.n) if velocity is None else np.asarray(velocity, float)
        self._set_servo_state(q.copy(), v.copy())
        self.counts = EpisodeCounts()

    def _set_servo_state(self, q: np.ndarray, v: np.ndarray) -> None:
        self._servo_state, self._servo_box = (q, v), None

    def servo_interval(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The targets that keep the servo's motion from its current state inside the hard limits shrunk by
        ``servo_margin`` (None without a servo model); computed once per state."""
        if self._servo_limit is None:
            return None
        if self._servo_box is None:
            self._servo_box = self._servo_limit.interval(*self.servo_state)
        return self._servo_box

    # ---- commands ---------------------------------------------------------------------------------------

    def __call__(self, command: object) -> ShieldStep:
        """Shield one command (joint positions or velocities, plus a gripper value when configured)."""
        raw = np.array(command, dtype=float, copy=True) if _numeric(command) else np.full(1, np.nan)
        split = self.config.gripper and raw.ndim == 1 and raw.size
        arm, gripper = (raw[:-1], raw[-1:]) if split else (raw, np.zeros(0))
        last = self.motion
        if self.config.control_mode == "joint_velocity":
            arm = last.q + arm * self.limits.dt
        q, interventions, fallback = self.shield_positions(arm, last)
        self._motion = Motion.at_rest(q) if fallback == "hold" else last.advance(q, self.limits.dt)
        out = (q - last.q) / self.limits.dt if self.config.control_mode == "joint_velocity" else q
        if self.config.gripper:
            out = np.concatenate([out, shield_gripper(gripper, interventions)])
        if self.config.servo is not None:
            self._set_servo_state(*self.config.servo.predict(*self.servo_state, q))
        step = ShieldStep(raw, out, tuple(interventions), fallback)
        self._count(step)
        return step

    @property
    def servo_state(self) -> tuple[np.ndarray, np.ndarray]:
        """The joint position and velocity the next command starts from: measured, or predicted since."""
        if self._servo_state is None:
            raise RuntimeError("shield: call reset(measured_position) before shielding commands")
        return self._servo_state

    def shield_positions(self, request: np.ndarray, last: Motion) -> tuple[np.ndarray, list[Intervention], str | None]:
        """Run the stages on a joint-position request; returns (positions, interventions, fallback or None)."""
        interventions: list[Intervention] = []

        def note(name: str, c: Correction) -> bool:
            if c.amount > MIN_INTERVENTION or not c.feasible:
                interventions.append(Intervention(name, c.amount, c.note))
            return c.feasible

        c = stages.schema(request, last)
        if not note("schema", c):
            return self._fallback(last, interventions)
        cmd = c.command
        for name in stages.enabled_bounds(self.limits):
            cmd = _noted(note, name, stages.clip_stage(name)(cmd, last, self.limits))
        servo_box = self.servo_interval()
        if servo_box is not None:
            c = servo_stage(cmd, *servo_box)
            if not note("servo", c):
                return self._fallback(last, interventions)
            cmd = c.command
        wish = cmd
        verified: set[str] = set()  # the geometric limits already checked on `cmd` as it is now
        if self.config.workspace is not None:
            c = workspace_stage(cmd, last, self.shadow, self.config.workspace,  # type: ignore[arg-type]
                                self.limits.dt, self.limits.acceleration)
            if not note("workspace", c):
                return self._fallback(last, interventions)
            cmd, verified = c.command, {"workspace"}
        if self.config.collision:
            c = collision_stage(cmd, last, self.shadow)  # type: ignore[arg-type]
            if not note("collision", c):
                return self._fallback(last, interventions)
            cmd, verified = c.command, (verified if c.amount == 0 else set()) | {"collision"}
        broken = self.violations(cmd, last, skip=verified)
        if broken and self.config.qp:
            # the sequential corrections broke an earlier limit: project the wish onto all of them at once
            lo, hi = stages.feasible_box(self.limits, last)
            if servo_box is not None:
                lo, hi = np.maximum(lo, servo_box[0]), np.minimum(hi, servo_box[1])
            c = qp_stage(wish, last, lo, hi, self.shadow, self.config.workspace, self.config.qp_gamma)
            if not note(f"qp[{solver_name(self.config.workspace)}]", c):
                return self._fallback(last, interventions)
            cmd = c.command
            broken = self.violations(cmd, last)
        if broken:
            interventions.append(Intervention("check", float("inf"), "broken: " + ", ".join(broken)))
            return self._fallback(last, interventions)
        return cmd, interventions, None

    def violations(self, q: np.ndarray, last: Motion, skip: set[str] | frozenset = frozenset()) -> list[str]:
        """Every enabled limit ``q`` breaks (joint intervals, servo, workspace, collision); empty when it is safe.
        ``skip``: geometric limits a stage has just verified on this very ``q``. The servo limit is the one for
        the next command (from the servo's current state)."""
        broken = stages.joint_violations(q, last, self.limits)
        if broken == ["schema"]:
            return broken
        servo_box = self.servo_interval()
        if servo_box is not None and not _inside(q, *servo_box):
            broken.append("servo")
        if (self.config.workspace is not None and "workspace" not in skip
                and not self.config.workspace.contains(self.shadow.ee_position(q))):  # type: ignore[union-attr]
            broken.append("workspace")
        if self.config.collision and "collision" not in skip and self.shadow.contacts(q):  # type: ignore[union-attr]
            broken.append("collision")
        return broken

    def _fallback(self, last: Motion, interventions: list[Intervention]) -> tuple[np.ndarray, list[Intervention], str]:
        """Decelerate when that is safe in position, workspace and collision; otherwise hold."""
        if self.config.fallback == "decelerate":
            q = stages.decelerate(last, self.limits)
            moving = bool(np.any(q != last.q))
            if moving and self._safe_to_decelerate(q, last):
                return q, interventions, "decelerate"
        return last.q.copy(), interventions, "hold"

    def _safe_to_decelerate(self, q: np.ndarray, last: Motion) -> bool:
        inside = bool((q >= self.limits.lower).all() and (q <= self.limits.upper).all())
        servo_box = self.servo_interval()
        if servo_box is not None:
            inside = inside and _inside(q, *servo_box)
        if self.config.workspace is not None:
            inside = inside and self.config.workspace.contains(self.shadow.ee_position(q))
        if self.config.collision:
            inside = inside and not self.shadow.contacts(q)  # type: ignore[union-attr]
        return bool(inside)

    def _count(self, step: ShieldStep) -> None:
        self.counts.add(step)
        if step.intervened:
            self.log.append(step)


def _numeric(command: object) -> bool:
    try:
        np.asarray(command, dtype=float)
    except (TypeError, ValueError):
        return False
    return True


def shield_gripper(gripper: np.ndarray, interventions: list[Intervention]) -> np.ndarray:
    """The gripper value that goes out: one finite number inside GRIPPER_RANGE (a missing or non-finite one
    becomes 0, the neutral command); any change is noted in `interventions`."""
    g = gripper if gripper.size == 1 and np.isfinite(gripper).all() else np.zeros(1)
    clipped = np.clip(g, *GRIPPER_RANGE)
    if gripper.size != 1 or (clipped != gripper).any():
        interventions.append(Intervention("gripper", float(np.max(np.abs(clipped - g), initial=0.0))))
    return clipped


def _inside(q: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> bool:
    tol = stages.TOLERANCE * (1.0 + np.abs(q))
    return bool((q >= lo - tol).all() and (q <= hi + tol).all())


def _noted(note, name: str, c: Correction) -> np.ndarray:
    note(name, c)
    return c.command
