"""Robot descriptions read from ``hardware/*.toml``: what a robot is, separate from how it is driven.

A hardware file names the joints, the control mode, the control rate, the limits (position, velocity,
acceleration, jerk, torque; SI units only, rad for revolute and m for prismatic joints, so no conversion can
slip in), the Cartesian workspace box in the
base frame, the cameras, the MuJoCo model (the shield's shadow model and the ``mujoco`` backend's robot) and the
backend with its settings. Validated like the task files: a bad value raises ``ConfigError`` naming the file and
the key (the CLI exits with 2). Nothing here imports a simulator, so ``robopolicy hardware list`` stays instant.

``mjcf`` may start with ``robosuite:``, meaning a path inside robosuite's installed ``models/assets`` folder
(found without importing robosuite); other relative paths are relative to the hardware file.
"""

from __future__ import annotations

import importlib.util
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from robopolicy.specs import ConfigError, from_dict, resolve_toml

HARDWARE_DIR = Path(__file__).resolve().parents[2] / "hardware"
ROBOSUITE_PREFIX = "robosuite:"

ControlMode = Literal["joint_position", "joint_velocity", "ee_delta"]
CONTROL_MODES: tuple[str, ...] = ("joint_position", "joint_velocity", "ee_delta")
# the only units accepted, per joint kind (revolute joints in rad, prismatic ones in m): the file states them so a
# reader sees them, the loader refuses anything else (no conversion can slip in)
JOINT_UNITS = {
    "rad": {"position": "rad", "velocity": "rad/s", "acceleration": "rad/s^2", "jerk": "rad/s^3", "torque": "Nm"},
    "m": {"position": "m", "velocity": "m/s", "acceleration": "m/s^2", "jerk": "m/s^3", "torque": "N"},
}
JOINT_QUANTITIES = ("position", "velocity", "acceleration", "jerk", "torque")


def _check(cond: bool, key: str, expected: str, got: Any) -> None:
    if not cond:
        raise ConfigError(f"{key}: expected {expected}, got {got!r}")


def _finite(values: tuple[float, ...]) -> bool:
    return all(math.isfinite(v) for v in values)


@dataclass
class Units:
    """Units of every number in the file; only SI is accepted. Joint quantities are one unit for all joints
    (``position = "m"``) or one per joint (``position = ["rad", "m"]``): ``rad``, ``rad/s``, ... ``Nm`` for
    revolute joints, ``m``, ``m/s``, ``m/s^2``, ``m/s^3``, ``N`` for prismatic ones (``JOINT_UNITS``); ``position``
    decides a joint's kind and the other quantities must match it."""

    position: str | list[str] = "rad"
    velocity: str | list[str] = "rad/s"
    acceleration: str | list[str] = "rad/s^2"
    jerk: str | list[str] = "rad/s^3"
    torque: str | list[str] = "Nm"
    length: str = "m"

    def __post_init__(self) -> None:
        _check(self.length == "m", "units.length", "'m'", self.length)
        for name in JOINT_QUANTITIES:
            allowed = sorted(units[name] for units in JOINT_UNITS.values())
            value = getattr(self, name)
            items = [value] if isinstance(value, str) else value
            for i, unit in enumerate(items):
                key = f"units.{name}" if isinstance(value, str) else f"units.{name}[{i}]"
                _check(unit in allowed, key, f"one of {allowed}", unit)

    def joint_kinds(self, n: int) -> list[str]:
        """Each joint's position unit (``rad`` or ``m``), checking that every quantity has one unit or ``n``
        units and that each matches its joint's kind; errors name the key."""
        def per_joint(name: str) -> list[str]:
            value = getattr(self, name)
            if isinstance(value, str):
                return [value] * n
            _check(len(value) == n, f"units.{name}", f"one unit for all joints or {n} (one per joint)", value)
            return list(value)

        kinds = per_joint("position")
        for name in JOINT_QUANTITIES[1:]:
            value = getattr(self, name)
            for j, (kind, unit) in enumerate(zip(kinds, per_joint(name))):
                key = f"units.{name}" if isinstance(value, str) else f"units.{name}[{j}]"
                _check(unit == JOINT_UNITS[kind][name], key,
                       f"{JOINT_UNITS[kind][name]!r} (joint {j} is in {kind}, units.position)", unit)
        return kinds


@dataclass
class JointLimits:
    """Per-joint hard limits in each joint's units (``Units``: rad, rad/s, ... Nm, or m, m/s, ... N for a prismatic
    joint); ``source`` says where the numbers come from.

    ``measured_velocity`` (optional, default ``velocity``): the velocity a *measured* state faults beyond, when a
    joint controller's tracking overshoot can take the joint faster than the commanded rate limit ``velocity`` (a
    lightly damped position servo fed steps); not below ``velocity``."""

    position_lower: tuple[float, ...]
    position_upper: tuple[float, ...]
    velocity: tuple[float, ...]
    acceleration: tuple[float, ...]
    jerk: tuple[float, ...]
    torque: tuple[float, ...]
    measured_velocity: tuple[float, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        self.measured_velocity = self.measured_velocity or self.velocity
        for name in ("position_lower", "position_upper", "velocity", "acceleration", "jerk", "torque",
                     "measured_velocity"):
            values = tuple(float(v) for v in getattr(self, name))
            setattr(self, name, values)
            _check(_finite(values), f"limits.{name}", "finite numbers", values)
        for name in ("velocity", "acceleration", "jerk", "torque"):
            _check(all(v > 0 for v in getattr(self, name)), f"limits.{name}", "positive numbers", getattr(self, name))
        _check(len(self.position_lower) == len(self.position_upper)
               and all(lo < hi for lo, hi in zip(self.position_lower, self.position_upper)),
               "limits.position_upper", "one value above each position_lower", self.position_upper)
        _check(len(self.measured_velocity) == len(self.velocity)
               and all(m >= v for m, v in zip(self.measured_velocity, self.velocity)), "limits.measured_velocity",
               f"one value per joint, each at least limits.velocity={list(self.velocity)}", self.measured_velocity)


@dataclass
class Workspace:
    """Axis-aligned box the end effector must stay in, in metres in ``frame`` (the robot's base frame)."""

    lower: tuple[float, float, float]
    upper: tuple[float, float, float]
    frame: str = "base"

    def __post_init__(self) -> None:
        _check(_finite(self.lower) and _finite(self.upper), "workspace", "finite bounds", (self.lower, self.upper))
        _check(all(lo < hi for lo, hi in zip(self.lower, self.upper)), "workspace.upper",
               f"each above workspace.lower={list(self.lower)}", self.upper)


@dataclass
class EeDeltaSpec:
    """End-effector delta commands (``control_mode = "ee_delta"``): ``scale`` is what one command unit moves the end
    effector per step (metres for dx, dy, dz, radians for rx, ry, rz), ``max`` the per-step bound of each component
    in command units (the shield clips to it)."""

    scale: tuple[float, float, float, float, float, float]
    max: tuple[float, float, float, float, float, float] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        for name in ("scale", "max"):
            values = tuple(float(v) for v in getattr(self, name))
            setattr(self, name, values)
            _check(_finite(values) and all(v > 0 for v in values), f"ee_delta.{name}", "6 positive numbers", values)


@dataclass
class ShieldSettings:
    """The shield's margins for this robot's controller (the ``[shield]`` table; absent keys: the defaults here).

    The shield bounds what is commanded; how far the robot's controller then lags and overshoots is the robot's,
    so the margins that keep its *measured* state inside the hard limits belong next to those limits, measured on
    that controller (``scripts/bench_shield.py --parts adversarial``; ``source`` says how). ``rate_margin`` (a
    fraction in [0, 1)): commanded velocities, accelerations and jerks stay that far below the limits;
    ``workspace_margin`` (m): commanded end-effector positions stay that far inside the workspace box;
    ``min_distance`` (m): commanded configurations keep the robot's bodies that far apart (the collision stage
    checks the commanded pose, a lagging arm's path passes others). A command line flag (``--rate-margin``,
    ``--workspace-margin``, ``--min-distance``) overrides them."""

    rate_margin: float = 0.1
    workspace_margin: float = 0.03
    min_distance: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        _check(math.isfinite(self.rate_margin) and 0.0 <= self.rate_margin < 1.0, "shield.rate_margin",
               "a fraction in [0, 1)", self.rate_margin)
        _check(math.isfinite(self.workspace_margin) and self.workspace_margin >= 0.0, "shield.workspace_margin",
               "a length >= 0 (m)", self.workspace_margin)
        _check(math.isfinite(self.min_distance) and self.min_distance >= 0.0, "shield.min_distance",
               "a length >= 0 (m)", self.min_distance)


@dataclass
class CameraSpec:
    """One camera: its name in the MuJoCo model (simulated) or on the robot side (real), and the frame size."""

    name: str
    width: int = 84
    height: int = 84

    def __post_init__(self) -> None:
        _check(bool(self.name), "cameras.name", "a non-empty string", self.name)
        _check(self.width > 0 and self.height > 0, f"cameras[{self.name}]", "positive width and height",
               (self.width, self.height))


@dataclass
class BackendSpec:
    """Which backend drives the robot (``robopolicy.hal.backend.backend_names()``) and its settings."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(bool(self.name), "backend.name", "a backend name", self.name)


@dataclass
class HardwareSpec:
    """One robot, as read from ``hardware/<name>.toml``.

    ``ee_site`` names the end-effector frame for forward kinematics: a site, or a body when ``ee_kind = "body"``.
    ``task`` (simulated robots only) makes the ``mujoco`` backend host that task's scene (``tasks/<task>.toml``)
    instead of the bare robot model; commands are then the task's actions.
    ``gripper``: commands carry one more value after the arm's (``-1`` open .. ``1`` closed).
    ``ee_delta``: the scale and bounds of end-effector delta commands (``control_mode = "ee_delta"``).
    ``allowed_contacts``: body pairs of the model that may touch (the shield's collision stage ignores them), e.g.
    a pusher and the object it pushes.
    ``shield``: the shield's margins measured for this robot's controller (:class:`ShieldSettings`).
    """

    name: str
    description: str
    robot: str
    joints: list[str]
    control_mode: ControlMode
    control_rate_hz: float
    limits: JointLimits
    workspace: Workspace
    mjcf: str
    ee_site: str
    backend: BackendSpec
    home: tuple[float, ...]
    ee_kind: Literal["site", "body"] = "site"
    base_frame: str = "base"
    simulated: bool = False
    gripper: bool = False
    task: str = ""
    cameras: list[CameraSpec] = field(default_factory=list)
    units: Units = field(default_factory=Units)
    allowed_contacts: list[tuple[str, str]] = field(default_factory=list)
    ee_delta: EeDeltaSpec | None = None
    shield: ShieldSettings = field(default_factory=ShieldSettings)
    path: str = ""

    def __post_init__(self) -> None:
        n = len(self.joints)
        _check(n > 0 and len(set(self.joints)) == n, "joints", "a non-empty list of unique names", self.joints)
        self.units.joint_kinds(n)  # one unit per joint quantity, each matching the joint's kind
        _check(self.control_mode in CONTROL_MODES, "control_mode", f"one of {list(CONTROL_MODES)}", self.control_mode)
        _check(math.isfinite(self.control_rate_hz) and 0 < self.control_rate_hz <= 10_000, "control_rate_hz",
               "a rate in (0, 10000] Hz", self.control_rate_hz)
        for name in ("position_lower", "position_upper", "velocity", "acceleration", "jerk", "torque"):
            values = getattr(self.limits, name)
            _check(len(values) == n, f"limits.{name}", f"{n} values (one per joint)", values)
        self.home = tuple(float(v) for v in self.home)
        _check(len(self.home) == n and all(lo <= q <= hi for q, lo, hi in zip(
            self.home, self.limits.position_lower, self.limits.position_upper)),
            "home", f"{n} joint positions inside the position limits", self.home)
        _check(bool(self.mjcf), "mjcf", "the path of the robot's MuJoCo model", self.mjcf)
        _check(bool(self.ee_site), "ee_site", "the end-effector site or body name", self.ee_site)
        _check(not self.task or self.simulated, "task", "empty unless simulated = true", self.task)
        names = [c.name for c in self.cameras]
        _check(len(set(names)) == len(names), "cameras", "unique camera names", names)
        extent = min(hi - lo for lo, hi in zip(self.workspace.lower, self.workspace.upper))
        _check(2 * self.shield.workspace_margin < extent, "shield.workspace_margin",
               f"less than half the workspace box's smallest side ({extent:g} m)", self.shield.workspace_margin)

    @property
    def n_joints(self) -> int:
        return len(self.joints)

    @property
    def joint_kinds(self) -> list[str]:
        """Each joint's position unit: ``rad`` (revolute) or ``m`` (prismatic)."""
        return self.units.joint_kinds(self.n_joints)

    @property
    def period_s(self) -> float:
        """Control period in seconds."""
        return 1.0 / self.control_rate_hz

    @property
    def command_dim(self) -> int:
        """Length of one command: joint values (or a 6-d end-effector delta), plus one gripper value."""
        arm = 6 if self.control_mode == "ee_delta" else self.n_joints
        return arm + int(self.gripper)


def resolve_asset(text: str, base: Path) -> Path:
    """``robosuite:<path>`` inside robosuite's installed assets, else a path relative to ``base``."""
    if text.startswith(ROBOSUITE_PREFIX):
        found = importlib.util.find_spec("robosuite")
        if found is None or not found.submodule_search_locations:
            raise ConfigError(f"mjcf: {text!r} names robosuite's assets, but robosuite is not installed")
        root = Path(list(found.submodule_search_locations)[0]) / "models" / "assets"
        return (root / text.removeprefix(ROBOSUITE_PREFIX)).resolve()
    path = Path(text).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def hardware_path(name_or_path: str | Path) -> Path:
    """Resolve a hardware name (``panda_sim``) or a path to a TOML file."""
    return resolve_toml(name_or_path, HARDWARE_DIR, "hardware")


def load_hardware(name_or_path: str | Path) -> HardwareSpec:
    """Read and validate one hardware file; errors name the file and the key. ``mjcf`` comes back resolved."""
    path = hardware_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from exc
    try:
        _check(isinstance(data.get("path", ""), str) and "path" not in data, "path", "no such key (set by the loader)",
               data.get("path"))
        spec = from_dict(HardwareSpec, data)
        mjcf = resolve_asset(spec.mjcf, path.parent)
        _check(mjcf.is_file(), "mjcf", "an existing MuJoCo model file", str(mjcf))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    spec.mjcf = str(mjcf)
    spec.path = str(path.resolve())
    return spec


def list_hardware(hardware_dir: Path = HARDWARE_DIR) -> list[str]:
    """Names of all hardware files, sorted."""
    return sorted(p.stem for p in hardware_dir.glob("*.toml"))
