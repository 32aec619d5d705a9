"""Bringing a robot up for a policy and down again: the steps ``robopolicy deploy`` and ``robopolicy eval
--hardware`` share. The backend is wrapped in the shield before it is armed, so nothing reaches the arm
unshielded; a policy whose action size or observation keys do not fit the robot is refused while disarmed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from robopolicy.hal.backend import Backend, make_backend
from robopolicy.hal.executor import ExecutorConfig
from robopolicy.hal.policy_adapter import check_keys
from robopolicy.hal.recorder import observation_arrays
from robopolicy.hal.shield.hardware import ShieldedBackend, ShieldOptions, build_shield
from robopolicy.hal.spec import HardwareSpec
from robopolicy.specs import ConfigError


def make_session_backend(spec: HardwareSpec, dry_run: bool = False, backend: str | None = None) -> Backend:
    """The hardware file's backend (or ``backend``); with ``dry_run`` wrapped read-only, so writes are discarded."""
    inner = make_backend(spec, backend)
    if not dry_run:
        return inner
    from robopolicy.hal.readonly import ReadOnlyBackend

    return ReadOnlyBackend(spec, inner=inner)


def check_policy_fits(policy: Any, spec: HardwareSpec, backend: Backend) -> None:
    """Action size and observation keys; reads once (the backend must be connected)."""
    dim = policy.config.action.dim
    if dim != spec.command_dim:
        raise ConfigError(f"{spec.path or spec.name}: the policy's actions have {dim} values; this robot's "
                          f"{spec.control_mode} commands have {spec.command_dim}")
    available = observation_arrays(backend.read())
    check_keys([o.key for o in policy.config.obs], available, spec.path or spec.name)


@contextmanager
def shielded_robot(spec: HardwareSpec, options: ShieldOptions, dry_run: bool = False, backend: str | None = None,
                   policy: Any = None) -> Iterator[ShieldedBackend]:
    """Connect, check the policy fits, wrap in the shield, arm; always disconnect (which holds) at the end."""
    raw = make_session_backend(spec, dry_run, backend)
    shield = build_shield(spec, options)
    raw.connect()
    try:
        if policy is not None:
            check_policy_fits(policy, spec, raw)
        raw.arm()
        yield ShieldedBackend(raw, shield)
    finally:
        raw.close()


def executor_config(policy: Any, **overrides: Any) -> ExecutorConfig:
    """The policy's chunking (history length, actions per plan) plus executor options."""
    return ExecutorConfig(n_obs_steps=policy.config.n_obs_steps, n_action_steps=policy.config.n_action_steps,
                          **overrides)
