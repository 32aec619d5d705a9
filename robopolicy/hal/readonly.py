"""``readonly`` backend: any backend, connected but never armed; writes are validated and discarded.

The dry run of ``robopolicy deploy`` uses it: the whole pipeline (policy, executor, shield) runs against live
readings while the arm's actuators stay off. The wrapped backend is only ever connected, so no command can reach
it even through a bug above this layer.
"""

from __future__ import annotations

from typing import Any

from robopolicy.hal.backend import Backend, Command, Observation, make_backend
from robopolicy.hal.spec import HardwareSpec


class ReadOnlyBackend(Backend):
    """Wraps ``inner`` (default: the backend the hardware file names, built from its settings)."""

    name = "readonly"

    def __init__(self, spec: HardwareSpec, inner: Backend | None = None, **settings: Any) -> None:
        super().__init__(spec)
        if inner is None:
            inner = make_backend(spec, **settings) if spec.backend.name != self.name else None
        if inner is None or isinstance(inner, ReadOnlyBackend):
            raise ValueError("readonly wraps another backend (the hardware file's backend.name must not be readonly)")
        self.inner = inner
        self.discarded = 0

    def _connect(self) -> None:
        self.inner.connect()

    def _disconnect(self) -> None:
        self.inner.close()

    def _read(self) -> Observation:
        return self.inner.read()

    def _write(self, command: Command) -> Command:
        self.discarded += 1
        return Command(command.value.copy(), command.mode, command.t_target, command.seq, t_applied=None, hold=True)

    def _hold(self) -> None:
        """Nothing to hold: the wrapped backend was never armed."""

    def _recover(self) -> None:
        if self.inner.state.value == "faulted":
            self.inner.recover()
