"""Choosing the vector-env backend: bad choices fail naming the field, with or without Ray installed."""

from __future__ import annotations

import sys

import pytest

from robopolicy.rl.config import RolloutConfig
from robopolicy.sim import make_vector_env
from robopolicy.specs import ConfigError


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ConfigError, match="vector_backend: expected 'local' or 'ray', got 'mpi'"):
        make_vector_env("push_puck", 2, backend="mpi")
    with pytest.raises(ConfigError, match="rollout.vector_backend: expected 'local' or 'ray'"):
        RolloutConfig(vector_backend="mpi")
    with pytest.raises(ConfigError, match="rollout.ray_workers"):
        RolloutConfig(vector_backend="ray", ray_workers=0)
    assert RolloutConfig().vector_backend == "local"


def test_ray_backend_without_ray_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as it does where Ray is not installed
    monkeypatch.delitem(sys.modules, "robopolicy.sim.ray_vector", raising=False)
    with pytest.raises(ConfigError, match=r"needs Ray, which is not installed \(pip install 'robopolicy\[dist\]'\)"):
        make_vector_env("push_puck", 2, backend="ray")
