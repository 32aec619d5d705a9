"""The shield for end-effector delta commands (``control_mode = "ee_delta"``, e.g. robosuite's OSC_POSE actions).

A command is a per-step Cartesian delta (dx, dy, dz, rx, ry, rz in command units; ``scale`` turns them into metres and
radians) plus an optional gripper value. The robot's own controller turns it into joint motion, so the joint-space
stages cannot correct it; they check the *measured* joints instead (outside the hard limits is a fault, never a clip:
:meth:`Shield.check_measured`). Stages, each a pure function confining every component to an interval that contains
zero (so clipping into one keeps a point inside the earlier ones: no stage loosens another, and a zero delta, the
fallback, satisfies them all):

schema/finite -> per-step delta bounds (``|d| <= max``) -> workspace (the measured end effector plus the commanded
translation stays in the box; from outside the box only staying or moving back is allowed) -> final check ->
fallback (a zero delta: the controller holds the pose).

The measured end effector comes from forward kinematics of the measured joints on the shadow model, recorded by
:meth:`EeDeltaShield.check_measured`, which the shielded backend calls on every reading.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from robopolicy.hal.shield.kinematics import ShadowModel, Workspace
from robopolicy.hal.shield.pipeline import (
    MIN_INTERVENTION,
    EpisodeCounts,
    Intervention,
    Shield,
    ShieldStep,
    _numeric,
    shield_gripper,
)
from robopolicy.hal.shield.stages import Correction

ARM_DIM = 6
TOLERANCE = 1e-9


@dataclass(frozen=True)
class EeDeltaConfig:
    """``scale``: metres (first three) and radians (last three) per command unit; ``max``: the per-step bound on each
    component, in command units; ``workspace``: the box the commanded end effector must stay in (None: no check)."""

    scale: np.ndarray
    max: np.ndarray
    workspace: Workspace | None = None
    gripper: bool = False
    control_mode: str = "ee_delta"

    def __post_init__(self) -> None:
        for name in ("scale", "max"):
            value = np.asarray(getattr(self, name), float)
            if value.shape != (ARM_DIM,) or not np.isfinite(value).all() or (value <= 0).any():
                raise ValueError(f"ee_delta.{name}: expected {ARM_DIM} positive numbers, got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)


def schema(command: object) -> Correction:
    """A finite float vector of six; anything else becomes a zero delta and the step is infeasible."""
    zero = np.zeros(ARM_DIM)
    try:
        arr = np.asarray(command, dtype=float)
    except (TypeError, ValueError):
        return Correction(zero, float("inf"), False, "not numeric")
    if arr.shape != (ARM_DIM,):
        return Correction(zero, float("inf"), False, f"shape {arr.shape}, expected ({ARM_DIM},)")
    if not np.isfinite(arr).all():
        return Correction(zero, float("inf"), False, "NaN or inf")
    return Correction(arr.copy())


def delta_bounds(config: EeDeltaConfig) -> tuple[np.ndarray, np.ndarray]:
    return -config.max, config.max.copy()


def workspace_bounds(config: EeDeltaConfig, ee: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per component, the deltas that keep ``ee`` + translation in the box (rotations unbounded); an axis already
    outside may stay or move back, never further out, so zero is always inside."""
    lo, hi = np.full(ARM_DIM, -np.inf), np.full(ARM_DIM, np.inf)
    box, s = config.workspace, config.scale[:3]
    if box is not None:
        lo[:3] = np.minimum((box.lower - ee) / s, 0.0)
        hi[:3] = np.maximum((box.upper - ee) / s, 0.0)
    return lo, hi


def clip(command: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> Correction:
    out = np.minimum(np.maximum(command, lo), hi)
    return Correction(out, float(np.max(np.abs(out - command), initial=0.0)))


def violations(command: np.ndarray, config: EeDeltaConfig, ee: np.ndarray) -> list[str]:
    """The limits ``command`` breaks (empty: none)."""
    if command.shape != (ARM_DIM,) or not np.isfinite(command).all():
        return ["schema"]
    broken = []
    for name, (lo, hi) in (("delta", delta_bounds(config)), ("workspace", workspace_bounds(config, ee))):
        tol = TOLERANCE * (1 + np.abs(command))
        if (command < lo - tol).any() or (command > hi + tol).any():
            broken.append(name)
    return broken


class EeDeltaShield:
    """Shields end-effector delta commands; ``joint`` (a joint-space :class:`Shield`) checks the measured joints,
    velocities and end effector against the hard limits, and its shadow model gives the measured end effector."""

    def __init__(self, config: EeDeltaConfig, joint: Shield, log_size: int = 10_000) -> None:
        if config.workspace is not None and joint.shadow is None:
            raise ValueError("shield: the ee_delta workspace stage needs a shadow model for the measured end effector")
        self.config = config
        self.joint = joint
        self.log: deque[ShieldStep] = deque(maxlen=log_size)
        self.counts = EpisodeCounts()
        self._ee: np.ndarray | None = None

    @property
    def shadow(self) -> ShadowModel | None:
        return self.joint.shadow

    @property
    def stage_names(self) -> list[str]:
        return ["schema", "delta"] + ["workspace"] * (self.config.workspace is not None)

    def check_measured(self, position: np.ndarray, velocity: np.ndarray | None = None) -> None:
        """Fault (:class:`ShieldFault`) on a measured state beyond the hard limits; remember the end effector."""
        self.joint.check_measured(position, velocity)
        if self.shadow is not None:
            self._ee = self.shadow.ee_position(np.asarray(position, float))

    def reset(self, position: np.ndarray, velocity: np.ndarray | None = None) -> None:
        """Start an episode at the measured position (and velocity; checked first); clears the episode counts."""
        self.check_measured(position, velocity)
        self.counts = EpisodeCounts()

    def __call__(self, command: object) -> ShieldStep:
        """Shield one command (six delta components, plus a gripper value when configured)."""
        if self._ee is None and self.config.workspace is not None:
            raise RuntimeError("shield: call reset(measured_position) before shielding commands")
        numeric = _numeric(command)
        raw = np.array(command, dtype=float, copy=True) if numeric else np.full(1, np.nan)
        split = self.config.gripper and raw.ndim == 1 and raw.size
        arm, gripper = (raw[:-1], raw[-1:]) if split else (raw, np.zeros(0))
        delta, interventions, fallback = self.shield_delta(arm)
        out = delta
        if self.config.gripper:
            out = np.concatenate([out, shield_gripper(gripper, interventions)])
        step = ShieldStep(raw, out, tuple(interventions), fallback)
        self._count(step)
        return step

    def shield_delta(self, request: np.ndarray) -> tuple[np.ndarray, list[Intervention], str | None]:
        """Run the stages on a six-component delta; returns (delta, interventions, fallback or None)."""
        interventions: list[Intervention] = []

        def note(name: str, c: Correction) -> np.ndarray:
            if c.amount > MIN_INTERVENTION or not c.feasible:
                interventions.append(Intervention(name, c.amount, c.note))
            return c.command

        c = schema(request)
        if not c.feasible:
            note("schema", c)
            return np.zeros(ARM_DIM), interventions, "hold"
        ee = self._ee if self._ee is not None else np.zeros(3)
        cmd = note("delta", clip(c.command, *delta_bounds(self.config)))
        if self.config.workspace is not None:
            cmd = note("workspace", clip(cmd, *workspace_bounds(self.config, ee)))
        broken = violations(cmd, self.config, ee)
        if broken:
            interventions.append(Intervention("check", float("inf"), "broken: " + ", ".join(broken)))
            return np.zeros(ARM_DIM), interventions, "hold"
        return cmd, interventions, None

    def _count(self, step: ShieldStep) -> None:
        self.counts.add(step)
        if step.intervened:
            self.log.append(step)

