"""Robot-side server of the remote link: serves one local backend to authenticated clients over ZeroMQ.

``robopolicy hardware serve FILE --backend mujoco`` runs it. It binds to 127.0.0.1 unless told otherwise and
refuses to start without a key (``--key-file`` or ``$ROBOPOLICY_HAL_KEY``) unless ``--insecure-localhost``,
which only serves on the loopback interface. Every message is checked (size, version, MAC, session, sequence
number) before it is acted on; a bad one is logged, answered with an error and dropped, and the server goes on
serving everyone else. Many clients may read; one at a time controls the arm (the one that armed it). When the
controlling client is silent for ``heartbeat_misses`` control periods, the server holds the arm and faults the
backend (``link_lost``): a client must recover it before arming again.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from robopolicy.hal import link
from robopolicy.hal.backend import (
    AuthError,
    Backend,
    Command,
    FaultError,
    FaultKind,
    HalError,
    LifecycleError,
    ProtocolError,
    State,
    clock,
)
from robopolicy.specs import ConfigError, to_dict

log = logging.getLogger(__name__)


@dataclass
class _Session:
    identity: bytes
    last_seq: int
    last_seen: float


class RobotServer:
    """Serve ``backend`` at ``address``. ``key=None`` needs ``insecure_localhost`` and a loopback address."""

    def __init__(self, backend: Backend, address: str = "tcp://127.0.0.1:5555", key: bytes | None = None,
                 insecure_localhost: bool = False, heartbeat_misses: int = 5,
                 max_bytes: int = link.MAX_MESSAGE_BYTES) -> None:
        if key is None:
            if not insecure_localhost:
                raise ConfigError("no key: pass --key-file or set $" + link.KEY_ENV +
                                  " (or --insecure-localhost to serve unauthenticated on 127.0.0.1 only)")
            if not link.is_loopback(address):
                raise ConfigError(f"--insecure-localhost serves on 127.0.0.1 only, not {address}")
            key = link.INSECURE_KEY
        self.backend, self.address, self.key, self.max_bytes = backend, address, key, max_bytes
        self.link_timeout_s = heartbeat_misses * backend.spec.period_s
        self.stats: Counter[str] = Counter()
        self._sessions: dict[str, _Session] = {}
        self._seen: set[str] = set()
        self._controller: str | None = None
        self._lost: set[str] = set()  # sessions that lost control by going silent
        self._context = zmq.Context()
        self._socket: zmq.Socket | None = None
        self._last_log: dict[str, float] = {}

    def start(self) -> str:
        """Connect the backend (read-only) and bind; returns the bound address (port 0 picks a free port)."""
        sock = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_bytes + 64 * 1024)  # libzmq drops peers beyond this
        sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        try:
            if self.address.endswith(":0"):
                port = sock.bind_to_random_port(self.address.rsplit(":", 1)[0])
                self.address = f"{self.address.rsplit(':', 1)[0]}:{port}"
            else:
                sock.bind(self.address)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise ConfigError(f"{self.address}: cannot bind ({exc})") from exc
        self._socket = sock
        if self.backend.state is State.DISCONNECTED:
            self.backend.connect()
        log.info("serving %s (%s backend) on %s", self.backend.spec.name, self.backend.name, self.address)
        return self.address

    def serve(self, stop: threading.Event | None = None, duration: float | None = None) -> None:
        """Answer requests until ``stop`` is set or ``duration`` seconds passed (forever when both are None)."""
        if self._socket is None:
            self.start()
        assert self._socket is not None
        deadline = None if duration is None else clock() + duration
        poll_ms = max(1, int(1000 * self.backend.spec.period_s / 2))
        while not (stop is not None and stop.is_set()) and (deadline is None or clock() < deadline):
            if self._socket.poll(poll_ms):
                while True:
                    try:
                        frames = self._socket.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._handle(frames)
            self._check_heartbeat()

    def close(self) -> None:
        """Hold and disarm, disconnect the backend, close the socket."""
        try:
            if self.backend.state in (State.ARMED, State.RUNNING):
                self.backend.disarm()
        except HalError as exc:
            log.warning("disarm on close failed: %s", exc)
        finally:
            self.backend.close()
            if self._socket is not None:
                self._socket.close(0)
            self._context.term()

    # ------------------------------------------------------------------ messages
    def _reject(self, identity: bytes, reason: str, message: str, session: str = "", seq: int = 0) -> None:
        self.stats[f"rejected_{reason}"] += 1
        now = clock()
        if now - self._last_log.get(reason, -1e9) > 1.0:  # at most one line per second per reason
            log.warning("rejected a message (%s) from peer %s: %s", reason, identity.hex()[:8], message)
            self._last_log[reason] = now
        self._reply(identity, link.Message("error", session, seq, {"error": reason, "message": message}))

    def _reply(self, identity: bytes, message: link.Message) -> None:
        assert self._socket is not None
        try:
            self._socket.send_multipart([identity, *link.encode(self.key, message)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the peer is gone or not reading: nothing to answer
            self.stats["reply_dropped"] += 1
            log.debug("reply dropped: %s", exc)

    def _handle(self, frames: list[bytes]) -> None:
        identity, frames = frames[0], frames[1:]
        try:
            msg = link.decode(self.key, frames, self.max_bytes)
        except AuthError as exc:
            return self._reject(identity, "auth", str(exc))
        except ProtocolError as exc:
            return self._reject(identity, "protocol", str(exc))
        session = self._sessions.get(msg.session)
        if msg.op == "hello":
            if msg.session in self._seen or msg.seq != 1 or len(msg.session) < 16:
                return self._reject(identity, "replay", "hello must open a new session at seq 1", msg.session, msg.seq)
            self._seen.add(msg.session)
            session = self._sessions[msg.session] = _Session(identity, 0, clock())
            self.stats["sessions"] += 1
        elif session is None:
            return self._reject(identity, "session", "unknown or closed session", msg.session, msg.seq)
        if msg.seq <= session.last_seq:
            return self._reject(identity, "replay", f"seq {msg.seq} after {session.last_seq}", msg.session, msg.seq)
        session.last_seq, session.last_seen, session.identity = msg.seq, clock(), identity
        try:
            body, arrays = self._dispatch(msg)
        except (HalError, ConfigError) as exc:
            kind = exc.kind.value if isinstance(exc, FaultError) else ""
            error = "fault" if kind else "lifecycle" if isinstance(exc, LifecycleError) else "request"
            self.stats[f"error_{error}"] += 1
            return self._reply(identity, link.Message("error", msg.session, msg.seq,
                                                      {"error": error, "kind": kind, "message": str(exc)}))
        self.stats["accepted"] += 1
        self._reply(identity, link.Message(msg.op, msg.session, msg.seq, body, arrays))

    def _dispatch(self, msg: link.Message) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        backend, now = self.backend, clock()
        if msg.op == "hello":
            spec = backend.spec
            if msg.body.get("hardware") != spec.name or msg.body.get("joints") != spec.joints:
                raise ConfigError(f"this server drives {spec.name!r} with joints {spec.joints}; the client's hardware "
                                  f"file says {msg.body.get('hardware')!r} with {msg.body.get('joints')}")
            return {"spec": to_dict(dataclasses.replace(spec, path="")), "state": backend.state.value}, {}
        if msg.op == "read":
            return link.pack_observation(backend.read(), clock())
        if msg.op == "heartbeat":
            return {"state": backend.state.value}, {}
        if msg.op == "status":
            return {"status": backend.status().to_dict()}, {}
        if msg.op == "estop":  # any authenticated client may stop the arm
            backend.estop()
            return {"state": backend.state.value}, {}
        if msg.op == "hold":
            if backend.state in (State.ARMED, State.RUNNING, State.FAULTED):
                backend.hold()
            return {"state": backend.state.value}, {}
        if msg.op == "bye":
            if self._controller == msg.session:
                self._release()
            self._sessions.pop(msg.session, None)
            return {}, {}
        if msg.op in ("arm", "recover") and self._controller not in (None, msg.session):
            raise LifecycleError("another client controls the arm")
        if msg.op == "arm":
            backend.arm()
            self._controller = msg.session
            return {"state": backend.state.value}, {}
        if msg.op == "recover":
            backend.recover()
            self._controller = None
            self._lost.discard(msg.session)
            return {"state": backend.state.value}, {}
        if msg.op in ("write", "disarm") and msg.session in self._lost:
            raise FaultError(FaultKind.LINK_LOST, "this client went silent and the arm was held; recover first")
        if msg.op in ("write", "disarm") and self._controller != msg.session:
            raise LifecycleError(f"{msg.op}: this client does not control the arm (arm first)")
        if msg.op == "disarm":
            self._release()
            return {"state": backend.state.value}, {}
        if msg.op == "write":
            value = msg.arrays.get("value")
            lead = msg.body.get("lead", 0.0)
            if value is None or not isinstance(lead, (int, float)):
                raise ProtocolError("write needs a 'value' array and a numeric 'lead'")
            applied = backend.write(Command(value.astype(np.float64), backend.spec.control_mode, now + float(lead)))
            age = None if applied.t_applied is None else clock() - applied.t_applied
            return {"hold": applied.hold, "applied_age": age}, {"value": applied.value}
        raise ProtocolError(f"unknown op {msg.op!r}")

    def _release(self) -> None:
        self._controller = None
        if self.backend.state in (State.ARMED, State.RUNNING):
            self.backend.disarm()

    def _check_heartbeat(self) -> None:
        """The controlling client went silent: hold the arm and fault the backend (it must be recovered)."""
        if self._controller is None:
            return
        session = self._sessions.get(self._controller)
        silent = clock() - session.last_seen if session else float("inf")
        if silent > self.link_timeout_s:
            self.stats["link_lost"] += 1
            log.warning("controlling client silent for %.3f s (limit %.3f s): holding the arm", silent,
                        self.link_timeout_s)
            self._lost.add(self._controller)
            self._controller = None
            self.backend.report_fault(FaultKind.LINK_LOST, f"no message from the controlling client for {silent:.3f} s")

