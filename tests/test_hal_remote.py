"""The remote link: every fault kind injected through it ends with the arm held or stopped on the robot side and
the client faulted; bad clients (wrong key, garbage, oversized, replayed messages) are refused, logged, and the
server keeps serving the others. Servers bind to 127.0.0.1 only and every loop is bounded."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

zmq = pytest.importorskip("zmq")

from robopolicy.hal import link  # noqa: E402
from robopolicy.hal.backend import EstopError, FaultError, FaultKind, LifecycleError, State  # noqa: E402
from robopolicy.hal.mock import FAULTS, MockBackend  # noqa: E402
from robopolicy.hal.remote import RemoteBackend  # noqa: E402
from robopolicy.hal.server import RobotServer  # noqa: E402
from robopolicy.hal.spec import load_hardware  # noqa: E402
from robopolicy.specs import ConfigError  # noqa: E402

KEY = "0123456789abcdef0123456789abcdef"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def spec():
    # 20 Hz: the link timeout and the stale/latency limits (5 periods) are 250 ms; no cameras, so the tests stay light
    return dataclasses.replace(load_hardware("panda_sim"), cameras=[])


@pytest.fixture()
def served(spec, caplog):
    """A mock robot behind a server thread on a free 127.0.0.1 port; stopped (and bounded to 60 s) after."""
    mock = MockBackend(spec)
    server = RobotServer(mock, "tcp://127.0.0.1:0", key=KEY.encode())
    address = server.start()
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop, 60.0), daemon=True)
    thread.start()
    yield mock, server, address
    stop.set()
    thread.join(5)
    server.close()


def client(spec, address, key=KEY, **kwargs) -> RemoteBackend:
    os.environ[link.KEY_ENV] = key
    try:
        return RemoteBackend(spec, address=address, **kwargs)
    finally:
        del os.environ[link.KEY_ENV]


def wait_until(condition, timeout=3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_round_trip_and_one_controller_at_a_time(served, spec):
    mock, server, address = served
    with client(spec, address) as first, client(spec, address) as second:
        first.connect()
        second.connect()
        first.arm()
        target = np.array(spec.home) + 0.05
        applied = first.write(target)
        np.testing.assert_allclose(applied.value, target)
        assert applied.t_applied is not None and mock.robot.n_commands == 1
        obs = second.read()  # any client may read
        np.testing.assert_allclose(obs.position, target)
        assert obs.t_capture <= time.monotonic() and set(obs.stamps) >= {"position", "velocity"}
        with pytest.raises(LifecycleError, match="another client controls"):
            second.arm()
        assert second.state is State.CONNECTED  # a refused request is not a fault
        first.disarm()
        assert mock.state is State.CONNECTED
    assert server.stats["sessions"] == 2


@pytest.mark.parametrize("fault", FAULTS)
def test_robot_side_faults_reach_the_client_and_the_arm_holds(served, spec, fault):
    mock, _, address = served
    with client(spec, address) as remote:
        remote.connect()
        remote.arm()
        home = np.array(spec.home)
        remote.write(home)
        remote.read()
        mock.inject(fault, seconds=0.4)
        if fault == "dropped_feedback":
            time.sleep(0.3)
        with pytest.raises(FaultError) as info:
            for _ in range(3):
                remote.write(home) if fault == "latency" else remote.read()
        kinds = {"dropped_feedback": {FaultKind.DROPPED_FEEDBACK}, "nan_reading": {FaultKind.NAN_READING},
                 "disconnect": {FaultKind.DISCONNECT},
                 # the client gives up after 250 ms, the robot side sees its 400 ms stall: either way it is faulted
                 "latency": {FaultKind.LATENCY, FaultKind.LINK_LOST}}[fault]
        assert info.value.kind in kinds
        assert remote.state is State.FAULTED
        assert wait_until(lambda: mock.state is State.FAULTED) and mock.robot.held
        n = mock.robot.n_commands
        with pytest.raises(LifecycleError):
            remote.write(home)
        assert mock.robot.n_commands == n


def test_estop_over_the_link_stops_the_robot(served, spec):
    mock, _, address = served
    with client(spec, address) as remote:
        remote.connect()
        remote.arm()
        remote.write(np.array(spec.home))
        remote.estop()
        remote.estop()
        assert wait_until(lambda: mock.status().estopped)
        n = mock.robot.n_commands
        with pytest.raises(EstopError):
            remote.write(np.array(spec.home))
        assert mock.robot.n_commands == n and mock.robot.held and mock.robot.stopped


def test_silent_client_makes_the_server_hold_and_fault(served, spec):
    mock, server, address = served
    remote = client(spec, address)
    remote.connect()
    remote.arm()
    remote.write(np.array(spec.home))
    remote._running = False  # the client process hangs: no more heartbeats
    assert wait_until(lambda: mock.state is State.FAULTED, timeout=2.0)
    assert mock.robot.held and server.stats["link_lost"] == 1
    assert mock.status().faults[-1] is FaultKind.LINK_LOST
    with pytest.raises(FaultError):  # the robot side no longer takes its commands
        remote.write(np.array(spec.home))
    assert remote.state is State.FAULTED
    remote.close()


def test_wrong_key_and_bad_messages_are_refused_and_others_still_served(served, spec, caplog):
    mock, server, address = served
    caplog.set_level(logging.WARNING, logger="robopolicy.hal.server")
    bad = client(spec, address, key="f" * 32)
    with pytest.raises(FaultError) as info:
        bad.connect()
    assert info.value.kind is FaultKind.AUTH and mock.robot.n_commands == 0
    bad.close()

    ctx = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(address)
    good_hello = link.encode(KEY.encode(), link.Message("hello", "a" * 32, 1, {"hardware": spec.name,
                                                                                 "joints": spec.joints}))
    arm = link.encode(KEY.encode(), link.Message("arm", "a" * 32, 2))
    write = link.encode(KEY.encode(), link.Message("write", "a" * 32, 3, {"lead": 0.0},
                                                   {"value": np.array(spec.home)}))
    attacks = [
        [b"garbage"],
        [b"\x00" * 10, b"{not json", b"x" * 32],
        [b"RPHAL\x02", b"{}", b"x" * 32],  # a future protocol version
        [link.MAGIC, b"{}", b"\x00" * 32],  # unsigned
        link.encode(KEY.encode(), link.Message("read", "unknown-session-000000", 1)),
        good_hello, arm, write, write,  # the replayed write must not move the arm a second time
        good_hello,  # replayed hello
    ]
    for frames in attacks:
        raw.send_multipart(frames)
    assert wait_until(lambda: server.stats["rejected_replay"] >= 2 and mock.robot.n_commands == 1)
    raw.close()
    ctx.term()
    # Oversized: libzmq drops the peer mid-message. The sender runs in its own process, because libzmq 4.3.5 may
    # abort the *sending* side when its peer drops it mid-multipart (libzmq#3442; seen ~1 in 90 runs in-process).
    oversized = ("import sys, time, zmq; from robopolicy.hal import link; c = zmq.Context(); s = c.socket(zmq.DEALER); "
                 f"s.connect({address!r}); s.send_multipart([link.MAGIC, b'x' * (5 << 20), b'x' * 32]); "
                 "time.sleep(0.2); s.close(0); c.term()")
    accepted = server.stats["accepted"]
    subprocess.run([sys.executable, "-c", oversized], cwd=ROOT, timeout=60, capture_output=True)
    assert server.stats["accepted"] == accepted and mock.robot.n_commands == 1
    assert server.stats["rejected_auth"] >= 2 and server.stats["rejected_protocol"] >= 2
    assert server.stats["rejected_session"] == 1
    logged = caplog.text
    assert "rejected a message (auth)" in logged and "rejected a message (protocol)" in logged

    with client(spec, address) as good:  # the server kept serving
        good.connect()
        np.testing.assert_allclose(good.read().position, spec.home)
        assert good.status().state is State.CONNECTED


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_killed_server_faults_the_client_within_the_link_timeout():
    port = free_port()
    env = {**os.environ, link.KEY_ENV: KEY}
    hw = ROOT / "hardware" / "panda_sim.toml"
    proc = subprocess.Popen([sys.executable, "-m", "robopolicy.cli", "hardware", "serve", str(hw), "--backend", "mock",
                             "--port", str(port), "--duration", "60"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert "serving" in proc.stdout.readline()
        served_spec = load_hardware(hw)
        remote = client(served_spec, f"tcp://127.0.0.1:{port}", timeout_s=2.0)
        remote.connect()
        remote.timeout_s = 0.25
        remote.arm()
        remote.write(np.array(served_spec.home))
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        assert wait_until(lambda: remote.state is State.FAULTED, timeout=2.0)  # the heartbeat notices by itself
        assert remote.status().faults[0] in (FaultKind.LINK_LOST, FaultKind.DISCONNECT)
        with pytest.raises(LifecycleError):
            remote.write(np.array(served_spec.home))
        remote.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def test_no_key_means_no_server_and_no_client(spec):
    mock = MockBackend(spec)
    with pytest.raises(ConfigError, match="no key"):
        RobotServer(mock)
    with pytest.raises(ConfigError, match="127.0.0.1 only"):
        RobotServer(mock, "tcp://0.0.0.0:5555", insecure_localhost=True)
    RobotServer(mock, "tcp://127.0.0.1:0", insecure_localhost=True).close()
    os.environ.pop(link.KEY_ENV, None)
    with pytest.raises(ConfigError, match="no key"):
        RemoteBackend(spec, address="tcp://127.0.0.1:1")
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        client(spec, "tcp://127.0.0.1:1", key="short")


def test_insecure_localhost_link_works(spec):
    mock = MockBackend(spec)
    server = RobotServer(mock, "tcp://127.0.0.1:0", insecure_localhost=True)
    address = server.start()
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop, 30.0), daemon=True)
    thread.start()
    try:
        with RemoteBackend(spec, address=address, insecure_localhost=True) as remote:
            remote.connect()
            np.testing.assert_allclose(remote.read().position, spec.home)
    finally:
        stop.set()
        thread.join(5)
        server.close()
