"""The one interface every robot backend implements: a lifecycle, stamped observations, applied commands.

Lifecycle (ros2_control's, condensed)::

    disconnected --connect--> connected (read-only) --arm--> armed --write--> running
          ^                        ^   |                      |  ^---hold-----'
          '------disconnect--------'   '<------disarm---------'
    any state --fault / estop--> faulted --recover--> connected

The base class enforces it: a call out of order raises :class:`LifecycleError` naming the state and the call
that would have been valid; commands are refused unless armed or running; after :meth:`Backend.estop` nothing is
written until :meth:`Backend.recover`. Subclasses implement the underscored hooks (``_connect``, ``_read``,
``_write``, ``_hold`` ...) and never the public methods.

Every actuator command goes Policy -> Executor -> Shield -> Backend: :meth:`Backend.write` is the raw actuator
path and only ``robopolicy.hal.shield`` (and the robot-side remote server, which applies what a shielded client
sent) may call it; everything else commands a robot through the shield's wrapper. It still refuses what no
shield can make safe: wrong shapes, non-finite values, a faulted or e-stopped backend.

Faults a backend detects itself, in :meth:`Backend.read` and :meth:`Backend.write`: a reading older than
``stale_periods`` control periods (dropped feedback), a call slower than ``latency_periods`` periods (latency
spike), a non-finite reading (NaN), a lost connection (the hook raised :class:`LinkError` or ``OSError``). Each
one holds the arm (best effort), moves to ``faulted`` and raises :class:`FaultError`.
"""

from __future__ import annotations

import enum
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from robopolicy.hal.spec import HardwareSpec

clock: Callable[[], float] = time.monotonic  # the one clock every stamp is taken on


class State(str, enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTED = "connected"
    ARMED = "armed"
    RUNNING = "running"
    FAULTED = "faulted"


class FaultKind(str, enum.Enum):
    DROPPED_FEEDBACK = "dropped_feedback"
    LATENCY = "latency"
    NAN_READING = "nan_reading"
    DISCONNECT = "disconnect"
    LINK_LOST = "link_lost"
    ESTOP = "estop"
    LIMIT = "limit"
    AUTH = "auth"
    PROTOCOL = "protocol"
    DRIVER = "driver"


class HalError(RuntimeError):
    """Base of every hardware-layer error."""


class LifecycleError(HalError):
    """A call that the current lifecycle state does not allow."""


class CommandError(HalError):
    """A command of the wrong shape or with non-finite values; nothing was written."""


class FaultError(HalError):
    """The backend is faulted (or just faulted); ``kind`` says why."""

    def __init__(self, kind: FaultKind, message: str) -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind


class EstopError(FaultError):
    """The e-stop is latched: nothing is written until ``recover()``."""

    def __init__(self, message: str = "e-stop latched; call recover() before arming again") -> None:
        super().__init__(FaultKind.ESTOP, message)


class LinkError(HalError):
    """The connection to the robot (driver socket, remote server) failed; raised by hooks, turned into a fault."""


class AuthError(LinkError):
    """The peer did not prove it holds the shared key."""


class ProtocolError(LinkError):
    """A malformed, oversized, replayed or wrong-version message."""


class LinkLostError(LinkError):
    """No reply or heartbeat from the peer for the allowed number of periods."""


_LINK_FAULTS = ((AuthError, FaultKind.AUTH), (ProtocolError, FaultKind.PROTOCOL), (LinkLostError, FaultKind.LINK_LOST))


@dataclass(frozen=True)
class Observation:
    """One reading. ``stamps`` holds the monotonic capture time of every field (``position``, ``velocity``,
    ``torque``, ``ee_position``, ``images/<camera>``, ``extras/<key>``); ``t_capture`` is the joint state's."""

    position: np.ndarray
    velocity: np.ndarray
    torque: np.ndarray
    t_capture: float
    seq: int = 0
    ee_position: np.ndarray | None = None
    images: dict[str, np.ndarray] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    stamps: dict[str, float] = field(default_factory=dict)

    def is_finite(self) -> bool:
        arrays = [self.position, self.velocity, self.torque]
        arrays += [self.ee_position] if self.ee_position is not None else []
        arrays += [v for v in self.extras.values() if np.issubdtype(np.asarray(v).dtype, np.floating)]
        return all(bool(np.isfinite(a).all()) for a in arrays)


@dataclass(frozen=True)
class Command:
    """One command in the spec's control mode: ``value`` has ``spec.command_dim`` entries; ``t_target`` is the
    monotonic time it is meant for. The copy :meth:`Backend.write` returns is what was applied: ``t_applied`` is
    set and ``hold`` is true when the backend held instead."""

    value: np.ndarray
    mode: str
    t_target: float
    seq: int = 0
    t_applied: float | None = None
    hold: bool = False


@dataclass(frozen=True)
class Status:
    state: State
    faults: tuple[FaultKind, ...]
    last_error: str
    estopped: bool
    overruns: int
    n_reads: int
    n_writes: int
    t_last_read: float | None
    t_last_write: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state.value, "faults": [f.value for f in self.faults], "last_error": self.last_error,
                "estopped": self.estopped, "overruns": self.overruns, "n_reads": self.n_reads,
                "n_writes": self.n_writes, "t_last_read": self.t_last_read, "t_last_write": self.t_last_write}


_COMMANDABLE = (State.ARMED, State.RUNNING)


class Backend(ABC):
    """Base of every backend: lifecycle, e-stop latch, fault detection and counters around the hooks.

    ``stale_periods``: a reading captured longer ago than this many control periods is dropped feedback.
    ``latency_periods``: a read or write taking longer than this many periods is a latency fault. A write whose
    call starts after its ``t_target`` counts as an overrun (not a fault: the executor decides about deadlines).
    """

    name: ClassVar[str] = ""

    def __init__(self, spec: HardwareSpec, stale_periods: float = 5.0, latency_periods: float = 5.0) -> None:
        self._spec = spec
        self.stale_s = stale_periods * spec.period_s
        self.latency_s = latency_periods * spec.period_s
        self._state = State.DISCONNECTED
        self._lock = threading.RLock()
        self._estop = threading.Event()
        self._faults: list[FaultKind] = []
        self._last_error = ""
        self._overruns = self._n_reads = self._n_writes = 0
        self._t_read: float | None = None
        self._t_write: float | None = None
        self._seq = 0

    # ------------------------------------------------------------------ hooks (subclasses)
    @abstractmethod
    def _connect(self) -> None: ...

    def _disconnect(self) -> None:  # noqa: B027 - optional hook, a no-op unless the backend needs it
        """Close the connection; must not raise when it is already gone."""

    def _arm(self) -> None:  # noqa: B027 - optional hook, a no-op unless the backend needs it
        """Enable the actuators (brakes off, controller on), holding the current position."""

    def _disarm(self) -> None:  # noqa: B027 - optional hook, a no-op unless the backend needs it
        """Disable the actuators after a hold."""

    @abstractmethod
    def _read(self) -> Observation: ...

    @abstractmethod
    def _write(self, command: Command) -> Command:
        """Apply one validated command; return what was applied. Only reached through :meth:`write`."""

    @abstractmethod
    def _hold(self) -> None:
        """Stop the arm where it is (position mode: hold the measured position; velocity mode: zero velocity)."""

    def _estop_hook(self) -> None:  # noqa: B027 - optional hook, a no-op unless the backend needs it
        """Stop the actuators now. Runs in any thread or a signal handler: no locks, no blocking I/O."""

    def _recover(self) -> None:  # noqa: B027 - optional hook, a no-op unless the backend needs it
        """Clear the robot-side fault after an e-stop or fault, leaving it connected and disarmed."""

    # ------------------------------------------------------------------ public API
    @property
    def spec(self) -> HardwareSpec:
        """The hardware description; readable in every state, also while disconnected."""
        return self._spec

    @property
    def state(self) -> State:
        """The lifecycle state; a latched e-stop reads as ``faulted`` whatever the last transition was."""
        if self._estop.is_set() and self._state is not State.DISCONNECTED:
            return State.FAULTED
        return self._state

    def connect(self) -> None:
        with self._lock:
            self._require("connect", State.DISCONNECTED)
            self._guard(self._connect)
            self._state = State.CONNECTED

    def disconnect(self) -> None:
        """Hold (when armed) and close; allowed from every state but ``disconnected``."""
        with self._lock:
            self._require("disconnect", State.CONNECTED, State.ARMED, State.RUNNING, State.FAULTED)
            if self.state in _COMMANDABLE:
                self._safe_hold()
            try:
                self._disconnect()
            finally:
                self._state = State.DISCONNECTED

    def arm(self) -> None:
        with self._lock:
            if self._estop.is_set():
                raise EstopError()
            self._require("arm", State.CONNECTED)
            self._guard(self._arm)
            self._state = State.ARMED

    def disarm(self) -> None:
        with self._lock:
            self._require("disarm", State.ARMED, State.RUNNING)
            self._guard(self._hold)
            self._guard(self._disarm)
            self._state = State.CONNECTED

    def read(self) -> Observation:
        """The latest observation; faults (and raises) on stale, slow, non-finite or lost feedback."""
        with self._lock:
            self._require("read", State.CONNECTED, State.ARMED, State.RUNNING, State.FAULTED)
            t0 = clock()
            obs = self._guard(self._read)
            t1 = clock()
            self._n_reads += 1
            self._t_read = t1
            if self.state is not State.FAULTED:
                if not obs.is_finite():
                    self._fault(FaultKind.NAN_READING, "non-finite value in the reading")
                if t1 - obs.t_capture > self.stale_s:
                    self._fault(FaultKind.DROPPED_FEEDBACK,
                                f"reading is {t1 - obs.t_capture:.3f} s old (limit {self.stale_s:.3f} s)")
                if t1 - t0 > self.latency_s:
                    self._fault(FaultKind.LATENCY, f"read took {t1 - t0:.3f} s (limit {self.latency_s:.3f} s)")
            return obs

    def write(self, command: Command | np.ndarray, t_target: float | None = None) -> Command:
        """Apply one command (raw actuator path: only the shield calls this); returns the command applied."""
        if self._estop.is_set():
            raise EstopError()
        with self._lock:
            self._require("write", *_COMMANDABLE)
            cmd = self._command(command, t_target)
            t0 = clock()
            if t0 > cmd.t_target + self._spec.period_s:
                self._overruns += 1
            if self._estop.is_set():  # an e-stop that arrived while waiting for the lock
                raise EstopError()
            applied = self._guard(lambda: self._write(cmd))
            t1 = clock()
            self._n_writes += 1
            self._t_write = t1
            if t1 - t0 > self.latency_s:
                self._fault(FaultKind.LATENCY, f"write took {t1 - t0:.3f} s (limit {self.latency_s:.3f} s)")
            self._state = State.RUNNING
            return applied

    def hold(self) -> None:
        """Stop the arm where it is; stays armed (or faulted)."""
        with self._lock:
            self._require("hold", State.ARMED, State.RUNNING, State.FAULTED)
            if self.state is State.FAULTED:
                self._safe_hold()
                return
            self._guard(self._hold)
            self._state = State.ARMED

    def estop(self) -> None:
        """Latch the e-stop: idempotent, lock-free, safe from any thread or a signal handler."""
        first = not self._estop.is_set()
        self._estop.set()
        self._estop_hook()
        if first:
            self._faults.append(FaultKind.ESTOP)
            self._last_error = "e-stop"

    def recover(self) -> None:
        """Clear a fault or the e-stop latch: ``faulted`` -> ``connected`` (arm again to command)."""
        with self._lock:
            self._require("recover", State.FAULTED)
            self._guard(self._recover)
            self._estop.clear()
            self._state = State.CONNECTED

    def report_fault(self, kind: FaultKind, message: str) -> None:
        """Fault from outside (watchdog, heartbeat thread, shield): hold and move to ``faulted`` without raising."""
        with self._lock:
            self._record(kind, message)

    def status(self) -> Status:
        return Status(self.state, tuple(self._faults), self._last_error, self._estop.is_set(), self._overruns,
                      self._n_reads, self._n_writes, self._t_read, self._t_write)

    def close(self) -> None:
        """Disconnect if connected (for ``finally`` blocks and context managers)."""
        if self.state is not State.DISCONNECTED:
            self.disconnect()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers
    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _require(self, call: str, *allowed: State) -> None:
        if self.state not in allowed:
            raise LifecycleError(f"{self.name or type(self).__name__}.{call}(): not allowed while "
                                 f"{self.state.value} (allowed while {', '.join(s.value for s in allowed)})")

    def _command(self, command: Command | np.ndarray, t_target: float | None) -> Command:
        if isinstance(command, Command):
            value, seq = command.value, command.seq
            t_target = command.t_target if t_target is None else t_target
            if command.mode != self._spec.control_mode:
                raise CommandError(f"command mode {command.mode!r}, backend expects {self._spec.control_mode!r}")
        else:
            value, seq = command, 0
        value = np.array(value, dtype=np.float64).reshape(-1) if np.ndim(value) <= 1 else np.asarray(value)
        if value.shape != (self._spec.command_dim,):
            raise CommandError(f"command shape {value.shape}, expected ({self._spec.command_dim},)")
        if not np.isfinite(value).all():
            raise CommandError(f"non-finite command {value.tolist()}")
        t = clock() if t_target is None else float(t_target)
        return Command(value, self._spec.control_mode, t, seq or self.next_seq())

    def _guard(self, fn: Callable[[], Any]) -> Any:
        """Run a hook; a lost link or a wrapped backend's fault becomes this backend's fault (hold, faulted,
        FaultError)."""
        try:
            return fn()
        except FaultError as exc:  # a wrapped backend (remote server, readonly's inner one) faulted
            self._fault(exc.kind, str(exc), cause=exc)
        except (LinkError, OSError) as exc:
            kind = next((k for cls, k in _LINK_FAULTS if isinstance(exc, cls)), FaultKind.DISCONNECT)
            self._fault(kind, str(exc) or type(exc).__name__, cause=exc)

    def _record(self, kind: FaultKind, message: str) -> None:
        self._faults.append(kind)
        self._last_error = f"{kind.value}: {message}"
        was_live = self._state in _COMMANDABLE
        self._state = State.FAULTED
        if was_live:
            self._safe_hold()

    def _fault(self, kind: FaultKind, message: str, cause: BaseException | None = None) -> None:
        self._record(kind, message)
        raise FaultError(kind, message) from cause

    def _safe_hold(self) -> None:
        try:
            self._hold()
        except Exception as exc:  # noqa: BLE001 - holding is best effort while faulting; the fault is recorded
            self._last_error += f"; hold failed: {exc}"


# ---------------------------------------------------------------------- registry
_REGISTRY: dict[str, str] = {
    "mock": "robopolicy.hal.mock:MockBackend",
    "mujoco": "robopolicy.hal.mujoco_backend:MujocoBackend",
    "replay": "robopolicy.hal.replay:ReplayBackend",
    "readonly": "robopolicy.hal.readonly:ReadOnlyBackend",
    "remote": "robopolicy.hal.remote:RemoteBackend",
}


def register_backend(name: str, target: str) -> None:
    """Register ``"package.module:Class"`` under ``name`` (imported only when a backend of that name is built)."""
    _REGISTRY[name] = target


def backend_names() -> list[str]:
    return sorted(_REGISTRY)


def backend_class(name: str) -> type[Backend]:
    import importlib

    from robopolicy.specs import ConfigError

    if name not in _REGISTRY:
        raise ConfigError(f"backend.name: expected one of {backend_names()}, got {name!r}")
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_backend(spec: HardwareSpec, name: str | None = None, **overrides: Any) -> Backend:
    """The backend the spec names (or ``name``), built with the spec's ``backend.settings`` and ``overrides``."""
    name = name or spec.backend.name
    settings = {**(spec.backend.settings if name == spec.backend.name else {}), **overrides}
    cls = backend_class(name)
    try:
        return cls(spec, **settings)
    except TypeError as exc:
        from robopolicy.specs import ConfigError

        raise ConfigError(f"{spec.path or spec.name}: backend.settings: {exc}") from exc

