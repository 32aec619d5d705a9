"""``mock`` backend: commands mirrored into state, optional lag, injectable faults (polymetis' mock mode, with
ros2_control's mock hardware as the model of a driver that does nothing but echo).

The simulated arm (:class:`MockRobot`) is kept apart from the connection (:class:`MockBackend`), as on a real
robot: a lost link stops the arm by the robot's own reflex (libfranka's communication-constraint reflex), not
by anything the client does. Every command that reached the arm is logged, so tests can check that nothing was
applied after an e-stop and that every fault ended with the arm held.

Faults (:meth:`MockBackend.inject`): ``dropped_feedback`` (readings stop updating), ``latency`` (the next call
stalls for ``seconds``), ``nan_reading`` (the next reading holds a NaN), ``disconnect`` (the link drops).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from robopolicy.hal.backend import Backend, Command, LinkError, Observation, clock
from robopolicy.hal.spec import HardwareSpec

FAULTS = ("dropped_feedback", "latency", "nan_reading", "disconnect")


@dataclass
class MockRobot:
    """The arm itself: joint positions follow the command with a first-order ``lag`` (in control periods; 0
    mirrors the command). ``log`` holds every applied command as ``(kind, value)``; ``held`` says whether the
    arm is standing still by a hold, an e-stop or the link reflex."""

    q: np.ndarray
    period_s: float
    lag: float = 0.0
    mode: str = "joint_position"
    dq: np.ndarray = field(init=False)
    target: np.ndarray = field(init=False)
    log: list[tuple[str, np.ndarray]] = field(default_factory=list)
    held: bool = True
    stopped: bool = False

    ee: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        self.q = np.array(self.q, dtype=np.float64)
        self.dq = np.zeros_like(self.q)
        self.target = self.q.copy()
        self.ee = np.array(self.ee, dtype=np.float64)

    def apply(self, value: np.ndarray) -> None:
        if self.stopped:
            raise LinkError("mock arm is stopped (e-stop or reflex); recover first")
        n = len(self.q)
        self.log.append(("command", value.copy()))
        self.held = False
        if self.mode == "joint_velocity":
            self.target = self.q + value[:n] * self.period_s
        elif self.mode == "ee_delta":
            self.ee = self.ee + value[:3]  # no kinematics in the mock: the end effector moves, the joints stay
        else:
            self.target = value[:n].copy()
        self.step()

    def step(self) -> None:
        """Advance one control period towards the target."""
        alpha = 1.0 if self.lag <= 0 else 1.0 - np.exp(-1.0 / self.lag)
        new_q = self.q + alpha * (self.target - self.q)
        self.dq = (new_q - self.q) / self.period_s
        self.q = new_q

    def hold(self, reason: str = "hold") -> None:
        self.target = self.q.copy()
        self.dq = np.zeros_like(self.q)
        self.held = True
        self.log.append((reason, self.q.copy()))

    def stop(self, reason: str) -> None:
        """E-stop or link reflex: hold and refuse commands until cleared."""
        self.hold(reason)
        self.stopped = True

    @property
    def n_commands(self) -> int:
        return sum(kind == "command" for kind, _ in self.log)


class MockBackend(Backend):
    """Echoing backend for tests, dry runs and benchmarks; ``lag`` in control periods."""

    name = "mock"

    def __init__(self, spec: HardwareSpec, lag: float = 0.0, stale_periods: float = 5.0,
                 latency_periods: float = 5.0) -> None:
        super().__init__(spec, stale_periods=stale_periods, latency_periods=latency_periods)
        centre = (np.array(spec.workspace.lower) + np.array(spec.workspace.upper)) / 2
        self.robot = MockRobot(np.array(spec.home), spec.period_s, lag, spec.control_mode, ee=centre)
        self._link_up = False
        self._pending: dict[str, float] = {}
        self._last: Observation | None = None
        self.injected: dict[str, int] = dict.fromkeys(FAULTS, 0)

    def inject(self, kind: str, seconds: float = 0.0) -> None:
        """Inject one fault (see the module docstring); counted in ``injected``."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r} (known: {', '.join(FAULTS)})")
        self.injected[kind] += 1
        if kind == "disconnect":
            self._link_up = False
            self.robot.stop("link reflex")
        else:
            self._pending[kind] = seconds

    def _check_link(self) -> None:
        if not self._link_up:
            raise LinkError("mock link is down")
        if "latency" in self._pending:
            time.sleep(self._pending.pop("latency"))

    def _connect(self) -> None:
        self._link_up = True
        self.robot.stopped = False

    def _disconnect(self) -> None:
        self._link_up = False

    def _read(self) -> Observation:
        self._check_link()
        if "dropped_feedback" in self._pending and self._last is not None:
            return self._last  # the driver keeps handing out the last packet
        t = clock()
        position = self.robot.q.copy()
        if self._pending.pop("nan_reading", None) is not None:
            position[0] = np.nan
        images = {c.name: np.zeros((c.height, c.width, 3), np.uint8) for c in self.spec.cameras}
        stamps = {"position": t, "velocity": t, "torque": t, "ee_position": t, **{f"images/{n}": t for n in images}}
        ee = self.robot.ee.copy() if self.spec.control_mode == "ee_delta" else None
        obs = Observation(position, self.robot.dq.copy(), np.zeros_like(position), t, self.next_seq(),
                          ee_position=ee, images=images, stamps=stamps)
        self._last = obs
        return obs

    def _write(self, command: Command) -> Command:
        self._check_link()
        self.robot.apply(command.value)
        return Command(command.value.copy(), command.mode, command.t_target, command.seq, t_applied=clock())

    def _hold(self) -> None:
        if not self._link_up:
            raise LinkError("mock link is down (the arm holds by its own reflex)")
        self.robot.hold()

    def _estop_hook(self) -> None:
        self.robot.stop("estop")

    def _recover(self) -> None:
        self._pending.clear()
        if self._link_up:
            self.robot.stopped = False
