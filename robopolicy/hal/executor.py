"""The executor: a fixed-rate control loop that turns a chunking policy into shielded commands.

Policy -> Executor -> Shield -> Backend. Each control tick ``k`` has the absolute deadline ``t0 + k * dt`` (so
delays never accumulate; a tick woken more than one period late counts as an overrun and the missed ticks are
skipped). Per tick: read (the shielded backend checks the measured state: outside the hard limits is a fault),
hand the observation to the inference thread when a new plan is due, pop this tick's action from the
:class:`~robopolicy.chunking.ChunkQueue`, shield and send it, record the step. Inference runs in its own
thread, so a slow policy never stalls the loop: while no action is queued the loop commands a standstill at
the last commanded position (which the shield brakes to within the acceleration limit), and after
``watchdog_periods`` such ticks (deoxys' 20 by default) the watchdog holds the arm and ends the run. SIGINT
latches the backend's e-stop. Whatever ends the run, the ``finally`` path holds and disarms the arm and closes
the recording.

Re-planning: ``fixed`` asks for a plan every ``n_action_steps`` ticks (diffusion_policy's receding horizon);
``adaptive`` asks when the queued actions would run out within the measured inference latency plus a margin,
so plans are as fresh as the latency allows.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from robopolicy.chunking import ChunkQueue, FrameHistory, SpliceMode, stack_frames
from robopolicy.hal.backend import FaultError, HalError, Observation, State, clock
from robopolicy.hal.recorder import Recorder, observation_arrays
from robopolicy.hal.shield.hardware import ShieldedBackend
from robopolicy.hal.shield.pipeline import ShieldFault

# obs history {key: (n_obs_steps, ...)} -> chunk (horizon, command_dim); index 0 is for the newest observation
InferFn = Callable[[dict[str, np.ndarray]], np.ndarray]

log = logging.getLogger(__name__)
JITTER_BINS_MS = (0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, math.inf)


@dataclass
class ExecutorConfig:
    n_obs_steps: int = 2
    n_action_steps: int = 8
    watchdog_periods: int = 20
    splice: SpliceMode = "replace"
    ensemble_decay: float = 0.01
    replan: Literal["fixed", "adaptive"] = "fixed"
    max_steps: int | None = None
    first_plan_timeout_s: float = 60.0
    realtime: bool = False  # run the control thread SCHED_FIFO where permitted (the inference thread stays normal)

    def __post_init__(self) -> None:
        if self.n_obs_steps < 1 or self.n_action_steps < 1 or self.watchdog_periods < 1:
            raise ValueError("executor: n_obs_steps, n_action_steps and watchdog_periods must be >= 1")
        if self.replan not in ("fixed", "adaptive"):
            raise ValueError(f"executor: replan must be 'fixed' or 'adaptive', got {self.replan!r}")


@dataclass
class RunReport:
    """What one run did; ``reason`` is "completed", "stopped", "watchdog", "estop", "fault", or "policy_error"."""

    reason: str = "completed"
    detail: str = ""
    steps: int = 0
    overruns: int = 0
    skipped_ticks: int = 0
    held: bool = False
    chunks: int = 0
    stale_actions: int = 0
    dry_ticks: int = 0
    jitter_ms: list[float] = field(default_factory=list)
    obs_to_command_ms: list[float] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    shield: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        def stats(values: list[float]) -> dict[str, float]:
            if not values:
                return {}
            arr = np.asarray(values)
            return {"p50": float(np.median(arr)), "p99": float(np.quantile(arr, 0.99)), "max": float(arr.max()),
                    "mean": float(arr.mean()), "n": len(arr)}

        counts, _ = np.histogram(np.abs(self.jitter_ms), bins=JITTER_BINS_MS)
        return {"reason": self.reason, "detail": self.detail, "steps": self.steps, "overruns": self.overruns,
                "skipped_ticks": self.skipped_ticks, "held": self.held, "chunks": self.chunks,
                "stale_actions": self.stale_actions, "dry_ticks": self.dry_ticks,
                "jitter_ms": stats(self.jitter_ms),
                "jitter_histogram_ms": {f"<{hi}": int(c) for hi, c in zip(JITTER_BINS_MS[1:], counts)},
                "obs_to_command_ms": stats(self.obs_to_command_ms), "inference_ms": stats(self.inference_ms),
                "shield": self.shield}


class _Inference(threading.Thread):
    """Runs the policy on request, off the control thread; a daemon, so a stalled policy cannot block exit."""

    def __init__(self, infer: InferFn, queue: ChunkQueue) -> None:
        super().__init__(name="robopolicy-inference", daemon=True)
        self.infer, self.queue = infer, queue
        self._cond = threading.Condition()
        self._request: tuple[int, dict[str, np.ndarray]] | None = None
        self._stop = False
        self.busy = False
        self.error: BaseException | None = None
        self.latencies_s: list[float] = []

    def request(self, tick: int, history: dict[str, np.ndarray]) -> None:
        with self._cond:
            self._request = (tick, history)
            self.busy = True
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()

    def run(self) -> None:
        while True:
            with self._cond:
                while self._request is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                tick, history = self._request  # type: ignore[misc]
                self._request = None
            t0 = time.perf_counter()
            try:
                chunk = np.asarray(self.infer(history), dtype=np.float64)
                if chunk.ndim != 2:
                    raise ValueError(f"policy returned an action chunk of shape {chunk.shape}; expected (T, D)")
            except BaseException as exc:  # noqa: BLE001 - reported to the control loop, which faults on it
                self.error = exc
                self.busy = False
                return
            self.latencies_s.append(time.perf_counter() - t0)
            self.queue.put(chunk, tick)
            self.busy = False


class Executor:
    """Runs ``infer`` against ``robot`` (a :class:`ShieldedBackend`, armed by the caller) at the spec's rate."""

    def __init__(self, robot: ShieldedBackend, infer: InferFn, config: ExecutorConfig | None = None,
                 recorder: Recorder | None = None, rate_hz: float | None = None) -> None:
        self.robot, self.infer = robot, infer
        self.config = config or ExecutorConfig()
        self.recorder = recorder
        self.rate_hz = float(rate_hz or robot.spec.control_rate_hz)
        self._stop = threading.Event()
        self._estopped = False

    def stop(self) -> None:
        """Ask the loop to finish after the current tick (thread-safe)."""
        self._stop.set()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._estopped = True
        self.robot.backend.estop()
        self._stop.set()

    def run(self, until: Callable[[int, Observation], bool] | None = None) -> RunReport:
        """Run one episode until ``max_steps``, ``until(step, obs)`` returns True, :meth:`stop`, a fault, the
        watchdog or SIGINT; the arm is always held and disarmed at the end."""
        cfg, report = self.config, RunReport()
        dt = 1.0 / self.rate_hz
        queue: ChunkQueue[np.ndarray] = ChunkQueue(cfg.splice, cfg.ensemble_decay)
        worker = _Inference(self.infer, queue)
        history: FrameHistory[dict[str, np.ndarray]] = FrameHistory(cfg.n_obs_steps)
        previous_handler = None
        if threading.current_thread() is threading.main_thread():
            previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            obs = self.robot.start()
            history.push(observation_arrays(obs))  # the first frame stands in for the history
            worker.start()
            worker.request(0, stack_frames(history.frames))
            if not self._wait_first_plan(worker, queue, report):
                return report
            restore = raise_priority() if cfg.realtime else None
            try:
                self._loop(obs, history, queue, worker, report, dt, until)
            finally:
                if restore is not None:
                    restore()
        except ShieldFault as exc:
            report.reason, report.detail = "fault", f"measured state: {exc}"
        except FaultError as exc:
            report.reason, report.detail = ("estop" if self._estopped else "fault"), str(exc)
        except HalError as exc:
            report.reason, report.detail = "fault", f"{type(exc).__name__}: {exc}"
        finally:
            worker.stop()
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
            report.held = self._hold_and_disarm()
            report.shield = self.robot.shield.counts.to_dict()
            report.chunks, report.stale_actions = queue.chunks, queue.stale_dropped
            report.inference_ms = [s * 1e3 for s in worker.latencies_s]
            if self.recorder is not None:
                self.recorder.end_episode({"reason": report.reason, "detail": report.detail})
        return report

    def _wait_first_plan(self, worker: _Inference, queue: ChunkQueue, report: RunReport) -> bool:
        """Block (not on the clock: the arm is standing still) until the first chunk arrives."""
        deadline = clock() + self.config.first_plan_timeout_s
        while queue.remaining(0) == 0 and worker.error is None and not self._stop.is_set():
            if clock() > deadline:
                report.reason, report.detail = "watchdog", "no first plan within first_plan_timeout_s"
                return False
            time.sleep(0.001)
        if worker.error is not None:
            report.reason, report.detail = "policy_error", repr(worker.error)
            return False
        if self._stop.is_set():
            report.reason = "estop" if self._estopped else "stopped"
            return False
        return True

    def _loop(self, obs: Observation, history: FrameHistory, queue: ChunkQueue, worker: _Inference, report: RunReport,
              dt: float, until: Callable[[int, Observation], bool] | None) -> None:
        cfg = self.config
        # the first plan was made from tick 0's observation, which is `obs`: tick 0 starts now
        t0 = clock()
        tick, last_fresh, last_request, last_command = 0, -1, 0, None
        while not self._stop.is_set():
            deadline = t0 + tick * dt
            now = clock()
            if now < deadline:
                time.sleep(deadline - now)
                now = clock()
            late = now - deadline
            if late > dt:  # woke more than a period late: skip the missed ticks, keep the absolute schedule
                skipped = int(late // dt)
                report.overruns += 1
                report.skipped_ticks += skipped
                tick += skipped
                deadline = t0 + tick * dt
            report.jitter_ms.append((now - deadline) * 1e3)
            if tick > 0:
                obs = self.robot.read()
                history.push(observation_arrays(obs))
            if worker.error is not None:
                report.reason, report.detail = "policy_error", repr(worker.error)
                return
            if self._replan_due(tick, last_request, queue, worker, dt):
                worker.request(tick, stack_frames(history.frames))
                last_request = tick
            action = queue.pop(tick)
            if action is None:
                dry = tick - last_fresh  # control periods, skipped ones included, since the last fresh action
                report.dry_ticks += 1
                if dry >= cfg.watchdog_periods:
                    report.reason, report.detail = "watchdog", f"no fresh command for {dry} control periods"
                    return
                action = self._standstill(last_command)
                raw = np.full_like(action, np.nan)  # recorded as such: no policy action this tick
            else:
                last_fresh, raw = tick, action
            step, _ = self.robot.send(action, deadline + dt)
            last_command = step.command
            if tick > 0:  # tick 0's observation is the one the first plan waited for
                report.obs_to_command_ms.append((clock() - obs.t_capture) * 1e3)
            if self.recorder is not None:
                self.recorder.add(obs, raw, step.command, step.intervened)
            report.steps += 1
            tick += 1
            if (cfg.max_steps is not None and report.steps >= cfg.max_steps) or (until and until(report.steps, obs)):
                return
        report.reason = "estop" if self._estopped else "stopped"

    def _standstill(self, last_command: np.ndarray | None) -> np.ndarray:
        """What to command while no action is queued: stay at the last commanded position (the shield brakes
        within the acceleration limit) or, in velocity and ee_delta mode, zero; the gripper keeps its value."""
        shield = self.robot.shield
        mode = shield.config.control_mode
        if mode == "joint_position":
            arm = shield.motion.q.copy()
        else:  # zero velocity, or a zero end-effector delta (the robot's controller holds the pose)
            arm = np.zeros(6 if mode == "ee_delta" else shield.limits.n)
        gripper = np.asarray(last_command[-1:] if last_command is not None else [0.0]) if shield.config.gripper \
            else np.zeros(0)
        return np.concatenate([arm, gripper])

    def _replan_due(self, tick: int, last_request: int, queue: ChunkQueue, worker: _Inference, dt: float) -> bool:
        if worker.busy:
            return False
        if self.config.replan == "fixed":
            return tick - last_request >= self.config.n_action_steps
        latency = np.median(worker.latencies_s[-10:]) if worker.latencies_s else dt
        return queue.remaining(tick) <= math.ceil(latency / dt) + 1

    def _hold_and_disarm(self) -> bool:
        """The ``finally`` path: hold and disarm whatever the state; True when the arm ended held or stopped."""
        backend = self.robot.backend
        try:
            if backend.state in (State.ARMED, State.RUNNING):
                backend.hold()
                backend.disarm()
            elif backend.state is State.FAULTED:
                backend.hold()  # best effort: a faulted backend already held when it faulted
        except HalError:
            pass
        return backend.state in (State.CONNECTED, State.FAULTED, State.DISCONNECTED)


def raise_priority() -> Callable[[], None] | None:
    """SCHED_FIFO for the calling (control) thread, as real-time robot drivers run theirs; threads started later
    would inherit it, so the inference thread is started first. Returns the undo, or None where not permitted."""
    try:
        policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
    except (AttributeError, OSError) as exc:
        log.info("executor: real-time priority not available (%s); running at normal priority", exc)
        return None
    return lambda: os.sched_setscheduler(0, policy, param)
