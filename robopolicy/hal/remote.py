"""``remote`` backend: a client of the robot-side server (``robopolicy.hal.server``) over the remote link.

The shared key comes from ``key_file`` or ``$ROBOPOLICY_HAL_KEY`` (``robopolicy.hal.link``); without one the
client refuses to start unless ``insecure_localhost`` and the address is on this machine. A background thread
sends a heartbeat whenever the link has been quiet for a control period; no reply within ``heartbeat_misses``
periods is a ``link_lost`` fault here, and the server holds the arm on its side when it stops hearing from us.
``estop()`` is lock-free: it wakes that thread, which sends the e-stop at once; this client writes nothing after.
Requests that the robot side refused with a fault fault this side too, with the same kind.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from typing import Any

import numpy as np
import zmq

from robopolicy.hal import link
from robopolicy.hal.backend import (
    Backend,
    Command,
    FaultError,
    FaultKind,
    HalError,
    LifecycleError,
    LinkError,
    LinkLostError,
    Observation,
    ProtocolError,
    State,
    clock,
)
from robopolicy.hal.spec import HardwareSpec
from robopolicy.specs import ConfigError

_LIVE = (State.CONNECTED, State.ARMED, State.RUNNING)


class RemoteBackend(Backend):
    """Client side. ``timeout_s``: reply deadline (default ``heartbeat_misses`` control periods)."""

    name = "remote"

    def __init__(self, spec: HardwareSpec, address: str = "tcp://127.0.0.1:5555", key_file: str | None = None,
                 key_env: str = link.KEY_ENV, insecure_localhost: bool = False, heartbeat_misses: int = 5,
                 timeout_s: float | None = None, max_bytes: int = link.MAX_MESSAGE_BYTES,
                 stale_periods: float = 5.0, latency_periods: float = 5.0) -> None:
        super().__init__(spec, stale_periods=stale_periods, latency_periods=latency_periods)
        key = link.load_key(key_file, key_env)
        if key is None:
            if not insecure_localhost:
                raise ConfigError(f"{spec.path or spec.name}: backend.settings: no key (key_file or ${key_env}); "
                                  "insecure_localhost = true connects unauthenticated to 127.0.0.1 only")
            if not link.is_loopback(address):
                raise ConfigError(f"{spec.path or spec.name}: backend.settings.address: insecure_localhost connects "
                                  f"to 127.0.0.1 only, not {address}")
            key = link.INSECURE_KEY
        self.address, self.key, self.max_bytes = address, key, max_bytes
        self.timeout_s = timeout_s if timeout_s is not None else heartbeat_misses * spec.period_s
        self._context: zmq.Context | None = None
        self._socket: zmq.Socket | None = None
        self._io = threading.Lock()
        self._session = ""
        self._link_seq = 0
        self._last_sent = 0.0
        self._wake = threading.Event()
        self._estop_pending = False
        self._heartbeat: threading.Thread | None = None
        self._running = False

    # ------------------------------------------------------------------ transport
    def _request(self, op: str, body: dict[str, Any] | None = None,
                 arrays: dict[str, np.ndarray] | None = None) -> link.Message:
        with self._io:
            if self._socket is None:
                raise LinkError("not connected")
            self._link_seq += 1
            seq = self._link_seq
            frames = link.encode(self.key, link.Message(op, self._session, seq, body or {}, arrays or {}))
            try:
                self._socket.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again as exc:  # IMMEDIATE: no live connection to queue on
                raise LinkLostError(f"{op}: no connection to {self.address}") from exc
            self._last_sent = clock()
            deadline = self._last_sent + self.timeout_s
            while (remaining := deadline - clock()) > 0:
                if not self._socket.poll(max(1, int(remaining * 1000))):
                    break
                reply = link.decode(self.key, self._socket.recv_multipart(), self.max_bytes)
                if reply.seq != seq or reply.session not in (self._session, ""):
                    continue  # the late answer to a request that timed out
                if reply.op == "error":
                    self._raise_remote(op, reply.body)
                return reply
            raise LinkLostError(f"{op}: no reply from {self.address} within {self.timeout_s:.3f} s")

    @staticmethod
    def _raise_remote(op: str, body: dict[str, Any]) -> None:
        message = f"robot side refused {op}: {body.get('message', '')}"
        error = body.get("error")
        if error == "fault":
            try:
                kind = FaultKind(body.get("kind"))
            except ValueError:
                kind = FaultKind.DRIVER
            raise FaultError(kind, message)
        if error == "lifecycle":
            raise LifecycleError(message)
        if error == "auth":
            raise link.AuthError(message)
        if error in ("protocol", "replay", "session"):
            raise ProtocolError(message)
        raise HalError(message)

    def _heartbeat_loop(self) -> None:
        period = self.spec.period_s
        while self._running:
            self._wake.wait(period)
            self._wake.clear()
            if not self._running:
                return
            try:
                if self._estop_pending:
                    self._request("estop")
                    self._estop_pending = False
                elif self.state in _LIVE and clock() - self._last_sent >= period:
                    state = self._request("heartbeat").body.get("state")
                    if state == State.FAULTED.value and self.state in (State.ARMED, State.RUNNING):
                        self._link_fault(FaultKind.DRIVER, "the robot side is faulted")
            except (HalError, zmq.ZMQError) as exc:
                self._link_fault(FaultKind.LINK_LOST, f"heartbeat: {exc}")

    def _link_fault(self, kind: FaultKind, message: str) -> None:
        """Fault from the heartbeat thread, unless the link is being closed meanwhile."""
        with self._lock:
            if self._running and self.state in _LIVE:
                self._record(kind, message)

    # ------------------------------------------------------------------ hooks
    def _connect(self) -> None:
        self._context = zmq.Context()
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # never queue a command for a connection that is not up
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_bytes + 64 * 1024)
        sock.connect(self.address)
        self._socket = sock
        self._session, self._link_seq = secrets.token_hex(16), 0
        deadline = clock() + max(1.0, self.timeout_s)
        while True:  # the TCP connection takes a moment: retry the hello until the deadline
            try:
                hello = self._request("hello", {"hardware": self.spec.name, "joints": self.spec.joints})
                break
            except LinkLostError:
                if clock() > deadline:
                    self._close_socket()
                    raise
                self._session, self._link_seq = secrets.token_hex(16), 0
            except (HalError, ConfigError):
                self._close_socket()
                raise
        self.remote_spec = hello.body.get("spec", {})
        self._running = True
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="hal-remote-heartbeat", daemon=True)
        self._heartbeat.start()

    def _close_socket(self) -> None:
        with self._io:
            if self._socket is not None:
                self._socket.close(0)
                self._socket = None
            if self._context is not None:
                self._context.term()
                self._context = None

    def _disconnect(self) -> None:
        self._running = False
        self._wake.set()
        if self._heartbeat is not None and self._heartbeat is not threading.current_thread():
            self._heartbeat.join(2 * self.timeout_s + 1)
        with contextlib.suppress(HalError, zmq.ZMQError):  # if it fails, the server times the session out
            self._request("bye")
        self._close_socket()

    def _arm(self) -> None:
        self._request("arm")

    def _disarm(self) -> None:
        self._request("disarm")

    def _read(self) -> Observation:
        reply = self._request("read")
        return link.unpack_observation(reply.body, reply.arrays, clock())

    def _write(self, command: Command) -> Command:
        reply = self._request("write", {"lead": command.t_target - clock()}, {"value": command.value})
        value = reply.arrays.get("value")
        if value is None:
            raise ProtocolError("write reply without the applied value")
        age = reply.body.get("applied_age")
        return Command(value.astype(np.float64), command.mode, command.t_target, command.seq,
                       t_applied=None if age is None else clock() - float(age), hold=bool(reply.body.get("hold")))

    def _hold(self) -> None:
        self._request("hold")

    def _estop_hook(self) -> None:
        self._estop_pending = True
        self._wake.set()

    def _recover(self) -> None:
        self._request("recover")
