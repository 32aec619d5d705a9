"""The backend lifecycle and the mock backend's injected faults: every fault ends with the arm held or stopped,
nothing is written after estop(), out-of-order calls are refused with errors that name the state."""

from __future__ import annotations

import dataclasses
import signal
import threading
import time

import numpy as np
import pytest

from robopolicy.hal.backend import (
    CommandError,
    EstopError,
    FaultError,
    FaultKind,
    LifecycleError,
    State,
    backend_names,
    make_backend,
)
from robopolicy.hal.mock import FAULTS, MockBackend
from robopolicy.hal.readonly import ReadOnlyBackend
from robopolicy.hal.spec import load_hardware
from robopolicy.specs import ConfigError


@pytest.fixture(scope="module")
def spec():
    return dataclasses.replace(load_hardware("panda_sim"), control_rate_hz=100.0)


def armed(spec, stale_periods: float = 100.0, latency_periods: float = 100.0, **kwargs) -> MockBackend:
    """Armed mock; the fault limits default to 1 s, so a loaded machine's stalls fault only the fault tests."""
    backend = MockBackend(spec, stale_periods=stale_periods, latency_periods=latency_periods, **kwargs)
    backend.connect()
    backend.arm()
    return backend


def test_lifecycle_refuses_out_of_order_calls(spec):
    backend = MockBackend(spec)
    assert backend.spec.n_joints == 7 and backend.state is State.DISCONNECTED  # spec readable while disconnected
    home = np.array(spec.home)
    for call in (backend.read, backend.arm, backend.disarm, backend.hold, backend.recover, backend.disconnect,
                 lambda: backend.write(home)):
        with pytest.raises(LifecycleError, match="while disconnected"):
            call()
    backend.connect()
    with pytest.raises(LifecycleError, match=r"write\(\): not allowed while connected .*armed, running"):
        backend.write(home)
    with pytest.raises(LifecycleError, match="connect"):
        backend.connect()
    with pytest.raises(LifecycleError):
        backend.disarm()
    backend.read()  # connected is read-only
    backend.arm()
    with pytest.raises(LifecycleError, match="arm"):
        backend.arm()
    backend.disarm()
    assert backend.state is State.CONNECTED and backend.robot.n_commands == 0


def test_write_moves_the_mock_and_returns_the_applied_command(spec):
    backend = armed(spec)
    target = np.array(spec.home) + 0.01
    applied = backend.write(target, t_target=time.monotonic())
    assert backend.state is State.RUNNING
    assert applied.t_applied is not None and not applied.hold
    np.testing.assert_allclose(applied.value, target)
    obs = backend.read()
    np.testing.assert_allclose(obs.position, target)
    assert {"position", "velocity", "torque", "images/front"} <= set(obs.stamps)
    assert obs.images["front"].shape == (84, 84, 3)
    backend.hold()
    assert backend.state is State.ARMED and backend.robot.held
    status = backend.status()
    assert status.n_writes == 1 and status.n_reads == 1 and status.faults == ()


def test_lagging_mock_approaches_the_target(spec):
    backend = armed(spec, lag=3.0)
    target = np.array(spec.home) + 0.1
    errors = []
    for _ in range(20):
        backend.write(target)
        errors.append(float(np.abs(backend.read().position - target).max()))
    assert errors[0] > 0.05 and errors[-1] < 1e-3 and errors == sorted(errors, reverse=True)


@pytest.mark.parametrize("bad", [np.zeros(6), np.full(7, np.nan), np.full(7, np.inf)])
def test_bad_commands_are_refused_before_reaching_the_arm(spec, bad):
    backend = armed(spec)
    with pytest.raises(CommandError):
        backend.write(bad)
    assert backend.robot.n_commands == 0 and backend.state is State.ARMED


def test_overrun_is_counted_when_a_command_is_late(spec):
    backend = armed(spec)
    backend.write(np.array(spec.home), t_target=time.monotonic() - 1.0)
    assert backend.status().overruns == 1


def test_nothing_is_written_after_estop_from_another_thread(spec):
    backend = armed(spec)
    target = np.array(spec.home)
    stop_at = threading.Event()
    refused = []

    def command_loop():
        for i in range(100_000):
            if i == 50:
                stop_at.set()
            try:
                backend.write(target)
            except EstopError:
                refused.append(i)
                return

    worker = threading.Thread(target=command_loop)
    worker.start()
    stop_at.wait(5)
    backend.estop()
    n_at_estop = backend.robot.n_commands
    worker.join(5)
    backend.estop()  # idempotent
    assert refused and backend.state is State.FAULTED and backend.status().estopped
    assert backend.robot.n_commands <= n_at_estop + 1  # at most the one write already inside the arm's call
    n_after = backend.robot.n_commands
    for call in (lambda: backend.write(target), backend.arm):
        with pytest.raises(EstopError):
            call()
    assert backend.robot.n_commands == n_after and backend.robot.held and backend.robot.stopped
    assert backend.status().faults.count(FaultKind.ESTOP) == 1


def test_estop_from_a_signal_handler_then_recover(spec):
    backend = armed(spec)
    previous = signal.signal(signal.SIGUSR1, lambda *_: backend.estop())
    try:
        signal.raise_signal(signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    with pytest.raises(EstopError):
        backend.write(np.array(spec.home))
    backend.recover()
    assert backend.state is State.CONNECTED
    backend.arm()
    backend.write(np.array(spec.home))
    assert backend.robot.n_commands == 1


@pytest.mark.parametrize("fault", FAULTS)
def test_every_injected_fault_ends_with_the_arm_held(spec, fault):
    backend = armed(spec, stale_periods=20, latency_periods=20)  # 200 ms
    home = np.array(spec.home)
    backend.write(home)
    backend.read()
    backend.inject(fault, seconds=0.3)
    if fault == "dropped_feedback":
        time.sleep(0.3)  # older than 20 periods
    with pytest.raises(FaultError) as info:
        backend.write(home) if fault == "latency" else backend.read()
    expected = {"dropped_feedback": FaultKind.DROPPED_FEEDBACK, "latency": FaultKind.LATENCY,
                "nan_reading": FaultKind.NAN_READING, "disconnect": FaultKind.DISCONNECT}[fault]
    assert info.value.kind is expected
    assert backend.state is State.FAULTED and backend.robot.held
    n = backend.robot.n_commands
    with pytest.raises(LifecycleError, match="faulted"):
        backend.write(home)
    assert backend.robot.n_commands == n
    assert backend.status().faults[-1] is expected and backend.injected[fault] == 1
    backend.close()
    assert backend.state is State.DISCONNECTED


def test_readonly_discards_writes_and_never_arms_the_robot(spec):
    inner = MockBackend(spec)
    backend = ReadOnlyBackend(spec, inner=inner)
    backend.connect()
    backend.arm()
    applied = backend.write(np.array(spec.home) + 0.2)
    assert applied.hold and applied.t_applied is None and backend.discarded == 1
    assert inner.state is State.CONNECTED and inner.robot.n_commands == 0
    np.testing.assert_allclose(backend.read().position, spec.home)
    backend.close()
    assert inner.state is State.DISCONNECTED


def test_registry_builds_backends_by_name(spec):
    assert {"mock", "mujoco", "replay", "readonly", "remote"} <= set(backend_names())
    assert isinstance(make_backend(spec, "mock", lag=1.0), MockBackend)
    readonly = make_backend(dataclasses.replace(spec, backend=dataclasses.replace(spec.backend, name="mock",
                                                                                  settings={})), "readonly")
    assert isinstance(readonly.inner, MockBackend)
    with pytest.raises(ConfigError, match="backend.name"):
        make_backend(spec, "nope")
    with pytest.raises(ConfigError, match="backend.settings"):
        make_backend(spec, "mock", bogus=1)
