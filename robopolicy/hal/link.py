"""Wire format of the remote link: versioned, size-limited, HMAC-authenticated multipart messages.

Why ZeroMQ (pyzmq): it is a small, long-maintained binding to a C library that does framing, reconnection and
per-peer routing (ROUTER/DEALER) without a broker or code generation, has a hard per-message size limit in the
library itself (``ZMQ_MAXMSGSIZE``: an oversized message drops that peer's connection before Python sees it) and
sends numpy buffers without copies. gRPC would add protobuf code generation and a far larger dependency for the
same request/reply traffic.

Why HMAC-SHA256 with a shared key (rather than ZMQ CURVE): the stdlib computes it, a key is a file or an
environment variable, and every message (not only the connection) is authenticated, bound to its session and
sequence number, so a captured message cannot be replayed and a stray packet cannot move the arm. Messages are
not encrypted: run the link on a trusted network or through an SSH tunnel.

A message is ``[MAGIC, header, blob..., mac]``: ``MAGIC`` carries the protocol version; ``header`` is JSON
(``op``, ``session``, ``seq``, ``body`` and the blobs' names, dtypes and shapes); blobs are raw array bytes;
``mac`` is HMAC-SHA256 over the length-prefixed frames before it. The receiver checks the size, the version and
the MAC before it parses any JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robopolicy.hal.backend import AuthError, Observation, ProtocolError
from robopolicy.specs import ConfigError

VERSION = 1
MAGIC = b"RPHAL" + bytes([VERSION])
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
KEY_ENV = "ROBOPOLICY_HAL_KEY"
MIN_KEY_BYTES = 16
# a fixed, public key: with --insecure-localhost the MAC still catches corrupt or foreign packets, nothing more
INSECURE_KEY = b"robopolicy-insecure-localhost-key"
_DTYPES = {"float64", "float32", "uint8", "int64", "bool"}
_MAX_BLOBS = 64


@dataclass
class Message:
    op: str
    session: str
    seq: int
    body: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def _mac(key: bytes, frames: list[bytes]) -> bytes:
    digest = hmac.new(key, digestmod=hashlib.sha256)
    for frame in frames:
        digest.update(struct.pack("<Q", len(frame)))
        digest.update(frame)
    return digest.digest()


def encode(key: bytes, message: Message) -> list[bytes]:
    """The frames of ``message``, signed with ``key``."""
    names = list(message.arrays)
    blobs = [np.ascontiguousarray(message.arrays[n]) for n in names]
    header = {"op": message.op, "session": message.session, "seq": message.seq, "body": message.body,
              "blobs": [[n, str(b.dtype), list(b.shape)] for n, b in zip(names, blobs)]}
    frames = [MAGIC, json.dumps(header, separators=(",", ":")).encode(), *(b.tobytes() for b in blobs)]
    return [*frames, _mac(key, frames)]


def decode(key: bytes, frames: list[bytes], max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """Check and parse one message; :class:`ProtocolError` for anything malformed, :class:`AuthError` for a
    wrong MAC (wrong key or tampered)."""
    if sum(len(f) for f in frames) > max_bytes:
        raise ProtocolError(f"message of {sum(len(f) for f in frames)} bytes exceeds the limit of {max_bytes}")
    if len(frames) < 3 or len(frames) > _MAX_BLOBS + 3:
        raise ProtocolError(f"expected 3 to {_MAX_BLOBS + 3} frames, got {len(frames)}")
    if frames[0] != MAGIC:
        got = frames[0][:8]
        raise ProtocolError(f"unknown protocol or version {got!r} (this side speaks version {VERSION})")
    if not hmac.compare_digest(frames[-1], _mac(key, frames[:-1])):
        raise AuthError("message authentication failed (wrong key or tampered message)")
    try:
        header = json.loads(frames[1])
        op, session, seq, body, specs = (header[k] for k in ("op", "session", "seq", "body", "blobs"))
        if not (isinstance(op, str) and isinstance(session, str) and isinstance(seq, int) and isinstance(body, dict)
                and isinstance(specs, list) and len(specs) == len(frames) - 3):
            raise ValueError("header fields of the wrong type")
        arrays = {}
        for (name, dtype, shape), blob in zip(specs, frames[2:-1]):
            if dtype not in _DTYPES:
                raise ValueError(f"dtype {dtype!r} not allowed")
            arrays[str(name)] = np.frombuffer(blob, dtype=dtype).reshape([int(s) for s in shape]).copy()
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed message: {exc}") from exc
    return Message(op, session, seq, body, arrays)


def load_key(key_file: str | Path | None = None, key_env: str = KEY_ENV) -> bytes | None:
    """The shared key from ``key_file`` (its stripped contents) or the environment variable; None when neither
    is set. A key shorter than 16 bytes, or a key file others can read, is refused."""
    if key_file:
        path = Path(key_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"key_file: {path}: file not found (make one: python -c \"import secrets; "
                              f"print(secrets.token_hex(32))\" > {path}; chmod 600 {path})")
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"key_file: {path}: readable by others (chmod 600 {path})")
        key = path.read_bytes().strip()
    else:
        key = os.environ.get(key_env, "").strip().encode()
        if not key:
            return None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"key: expected at least {MIN_KEY_BYTES} bytes, got {len(key)}")
    return key


def is_loopback(address: str) -> bool:
    """Whether a ``tcp://host:port`` address is on this machine only."""
    host = address.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def pack_observation(obs: Observation, now: float) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Body and arrays for an observation; stamps travel as ages (seconds before ``now``), since monotonic clocks
    of two processes are not comparable."""
    arrays = {"position": obs.position, "velocity": obs.velocity, "torque": obs.torque}
    if obs.ee_position is not None:
        arrays["ee_position"] = obs.ee_position
    arrays.update({f"images/{k}": v for k, v in obs.images.items()})
    arrays.update({f"extras/{k}": np.asarray(v) for k, v in obs.extras.items()})
    ages = {k: now - t for k, t in obs.stamps.items()}
    return {"seq": obs.seq, "age": now - obs.t_capture, "ages": ages}, arrays


def unpack_observation(body: dict[str, Any], arrays: dict[str, np.ndarray], received: float) -> Observation:
    """Rebuild an observation, re-stamped on this process's clock as ``received - age`` (conservative: the
    transport time counts as age, so a slow link shows up as stale feedback)."""
    try:
        images = {k.removeprefix("images/"): v for k, v in arrays.items() if k.startswith("images/")}
        extras = {k.removeprefix("extras/"): v for k, v in arrays.items() if k.startswith("extras/")}
        stamps = {str(k): received - float(a) for k, a in body["ages"].items()}
        return Observation(arrays["position"], arrays["velocity"], arrays["torque"], received - float(body["age"]),
                           int(body["seq"]), ee_position=arrays.get("ee_position"), images=images, extras=extras,
                           stamps=stamps)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError(f"malformed observation: {exc}") from exc
