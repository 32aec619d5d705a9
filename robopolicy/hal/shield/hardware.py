"""The shield built from a hardware file, and :class:`ShieldedBackend`, the one path from a command to an
actuator: it shields every command before calling the backend's raw ``write`` (a test walks the source tree
and fails if anything else calls it), and checks every reading against the hard limits (fault, not clip)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from robopolicy.hal.backend import Backend, Command, FaultKind, Observation
from robopolicy.hal.shield.ee_delta import EeDeltaConfig, EeDeltaShield
from robopolicy.hal.shield.kinematics import ShadowModel, Workspace
from robopolicy.hal.shield.pipeline import Shield, ShieldConfig, ShieldFault, ShieldStep
from robopolicy.hal.shield.servo import identify_servo
from robopolicy.hal.shield.stages import JointLimits
from robopolicy.hal.spec import HardwareSpec
from robopolicy.specs import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShieldOptions:
    """Which stages run and how tight they are; the limits themselves come from the hardware file.

    ``margin`` (rad) keeps commands to revolute joints this far inside the hard position limits, ``linear_margin``
    (m) those to prismatic joints (``units.position = "m"``; 2 cm: the push_puck pusher's lightly damped servo
    overshoots its targets by up to ~4 cm under adversarial commands, and its scripted expert, shielded, stays
    1.4 cm clear of the end stops); ``rate_margin`` (a fraction) keeps
    commanded velocities, accelerations and jerks that far below theirs, so a controller's tracking overshoot
    stays inside the hard limits (measured states fault only beyond those, and velocities only beyond
    ``1 + velocity_tolerance`` times theirs: estimates are noisy). ``min_distance`` (m): closer geom pairs count as
    colliding. ``workspace_margin`` (m) shrinks the workspace box for commands in the same way (a lagging or
    overshooting arm stays inside the file's box). ``rate_margin``, ``workspace_margin`` and ``min_distance`` left at
    ``None`` are the hardware file's (its ``[shield]`` table, :class:`~robopolicy.hal.spec.ShieldSettings`): how far a
    controller overshoots is the robot's, so they are measured per robot (the simulated Panda's PD controller
    overshoots commanded velocities by up to 1.54x under adversarial commands, so ``panda_sim.toml`` sets
    ``rate_margin = 0.5``). ``rates``: the velocity, acceleration and jerk stages.
    ``servo``: when the MJCF drives the joints with position actuators (push_puck's pusher), the servo stage keeps
    where they carry the joints from the measured state inside the hard limits shrunk by ``servo_margin`` (m or
    rad; ``servo.py``).
    """

    margin: float = 0.05
    linear_margin: float = 0.02
    rate_margin: float | None = None
    rates: bool = True
    workspace: bool = True
    collision: bool = True
    min_distance: float | None = None
    qp: bool = False
    fallback: str = "decelerate"
    measured_tolerance: float = 0.01
    velocity_tolerance: float = 0.25
    workspace_margin: float | None = None
    servo: bool = True
    servo_margin: float = 0.001

    @classmethod
    def joint_only(cls) -> ShieldOptions:
        """No shadow model: schema, positions and rates (no MuJoCo needed)."""
        return cls(workspace=False, collision=False, servo=False)


def margins(spec: HardwareSpec, options: ShieldOptions) -> tuple[float, float, float]:
    """The rate margin, workspace margin and minimum distance ``options`` run with on ``spec``: their own, else the
    hardware file's ``[shield]``."""
    file = spec.shield
    rate = file.rate_margin if options.rate_margin is None else options.rate_margin
    workspace = file.workspace_margin if options.workspace_margin is None else options.workspace_margin
    distance = file.min_distance if options.min_distance is None else options.min_distance
    for name, value in (("workspace_margin", workspace), ("min_distance", distance)):
        if not value >= 0.0:
            raise ConfigError(f"shield: {name} must be >= 0 (m), got {value}")
    return rate, workspace, distance


def joint_limits(spec: HardwareSpec, margin: float = 0.05, rates: bool = True, rate_margin: float = 0.0,
                 linear_margin: float = 0.02) -> JointLimits:
    """The limits the shield holds commands to: positions ``margin`` (rad; ``linear_margin`` m for prismatic
    joints) inside, rates ``rate_margin`` below."""
    lim, scale = spec.limits, 1.0 - rate_margin
    if not 0.0 <= rate_margin < 1.0:
        raise ConfigError(f"shield: rate_margin must be in [0, 1), got {rate_margin}")
    return JointLimits(
        lower=np.array(lim.position_lower), upper=np.array(lim.position_upper), dt=spec.period_s,
        margin=np.array([linear_margin if kind == "m" else margin for kind in spec.joint_kinds]),
        velocity=np.array(lim.velocity) * scale if rates else None,
        acceleration=np.array(lim.acceleration) * scale if rates else None,
        jerk=np.array(lim.jerk) * scale if rates else None,
    )


def shadow_model(spec: HardwareSpec, min_distance: float = 0.0) -> ShadowModel:
    """The shadow model of ``spec.mjcf``. A real robot's driver may name its joints differently from the
    model (``panda_joint1`` vs ``joint1``): then the model's joints are taken in order if their count matches."""
    try:
        return ShadowModel(spec.mjcf, spec.joints, spec.ee_site, min_distance, spec.allowed_contacts, spec.ee_kind)
    except KeyError:
        shadow = ShadowModel(spec.mjcf, None, spec.ee_site, min_distance, spec.allowed_contacts, spec.ee_kind)
        if shadow.n_joints != spec.n_joints:
            raise ConfigError(f"{spec.path}: joints: the model {spec.mjcf} has none of these names and "
                              f"{shadow.n_joints} joints, not {spec.n_joints}") from None
        log.info("shield: %s names its joints differently from %s; using the model's joints in order",
                 spec.path or spec.name, spec.mjcf)
        return shadow


def build_shield(spec: HardwareSpec, options: ShieldOptions | None = None) -> Shield | EeDeltaShield:
    """The shield for ``spec``'s limits, workspace and model, with the stages ``options`` enable. For ``ee_delta``
    commands an :class:`EeDeltaShield` (delta bounds, workspace on the measured end effector plus the commanded
    translation); its joint-space shield checks the measured state only (collision and QP stages do not apply)."""
    options = options or ShieldOptions()
    rate_margin, m, min_distance = margins(spec, options)
    ee_delta = spec.control_mode == "ee_delta"
    if ee_delta and spec.ee_delta is None:
        raise ConfigError(f"{spec.path or spec.name}: ee_delta: control_mode = \"ee_delta\" needs an [ee_delta] table "
                          "(scale: metres and radians per command unit; max: per-step bounds) for the shield")
    try:
        lower, upper = np.array(spec.workspace.lower), np.array(spec.workspace.upper)
        config = ShieldConfig(
            joint_limits(spec, options.margin, options.rates, rate_margin, options.linear_margin),
            control_mode="joint_position" if ee_delta else spec.control_mode,
            workspace=Workspace(lower + m, upper - m) if options.workspace else None,
            hard_workspace=Workspace(lower, upper) if options.workspace else None,
            collision=options.collision and not ee_delta, qp=options.qp and not ee_delta,
            fallback=options.fallback,  # type: ignore[arg-type]
            gripper=spec.gripper and not ee_delta, measured_tolerance=options.measured_tolerance,
            hard_velocity=np.array(spec.limits.measured_velocity), velocity_tolerance=options.velocity_tolerance,
            servo=identify_servo(spec.mjcf, spec.joints, spec.period_s)
            if options.servo and spec.control_mode == "joint_position" else None,
            servo_margin=options.servo_margin,
        )
        joint = Shield(config, shadow_model(spec, min_distance)
                       if options.workspace or config.collision else None)
        if not ee_delta:
            return joint
        ee = EeDeltaConfig(np.array(spec.ee_delta.scale), np.array(spec.ee_delta.max),  # type: ignore[union-attr]
                           workspace=config.workspace, gripper=spec.gripper)
        return EeDeltaShield(ee, joint)
    except ValueError as exc:
        raise ConfigError(f"{spec.path or spec.name}: shield: {exc}") from exc


class ShieldedBackend:
    """A backend that can only be commanded through a shield.

    ``start()`` reads the measured state and resets the shield there (position and velocity); ``read()`` checks
    each reading against the hard limits (a violation is reported to the backend as a ``limit`` fault, which holds
    the arm, and raises :class:`ShieldFault`); ``send()`` shields a command and applies it.
    """

    def __init__(self, backend: Backend, shield: Shield | EeDeltaShield) -> None:
        self.backend = backend
        self.shield = shield

    @property
    def spec(self) -> HardwareSpec:
        return self.backend.spec

    def start(self) -> Observation:
        obs = self.read()
        self.shield.reset(obs.position, obs.velocity)
        return obs

    def read(self) -> Observation:
        obs = self.backend.read()
        try:
            self.shield.check_measured(obs.position, obs.velocity)
        except ShieldFault as exc:
            self.backend.report_fault(FaultKind.LIMIT, str(exc))
            raise
        return obs

    def send(self, action: np.ndarray, t_target: float | None = None) -> tuple[ShieldStep, Command]:
        """Shield ``action`` and write the result; returns the shield's step and the command applied."""
        step = self.shield(action)
        return step, self.backend.write(step.command, t_target)
