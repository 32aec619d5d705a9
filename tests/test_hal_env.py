"""The evaluation protocol run through a backend: the simulated Panda behind the shield, as a vector env."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from robopolicy.eval.protocol import EvalConfig, evaluate
from robopolicy.hal.backend import make_backend
from robopolicy.hal.env import BackendVectorEnv
from robopolicy.hal.shield.hardware import ShieldedBackend, ShieldOptions, build_shield
from robopolicy.hal.spec import load_hardware
from robopolicy.specs import ChunkSpec

pytest.importorskip("mujoco")


class Reach:
    """Chunks that step joint 1 towards an offset target (a 'policy' with a known outcome); ``estop_at``: the
    call at which it presses the e-stop, as an operator would."""

    def __init__(self, backend, offset: float, estop_at: int | None = None) -> None:
        self.config = ChunkSpec(n_obs_steps=2, horizon=4, n_action_steps=4)
        self.backend, self.offset, self.estop_at, self.calls = backend, offset, estop_at, 0
        self.home = np.array(backend.spec.home)

    def reset(self) -> None:
        pass

    def predict_action(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.estop_at:
            self.backend.estop()
        q = obs["joint_position"][:, -1].double().numpy()
        goal = self.home.copy()
        goal[0] += self.offset
        steps = [q + (goal - q) * min(1.0, 0.25 * (i + 1)) for i in range(4)]
        return torch.as_tensor(np.stack(steps, axis=1))


@pytest.fixture()
def robot():
    spec = dataclasses.replace(load_hardware("panda_sim"), cameras=[])  # no frames: the test stays fast
    backend = make_backend(spec)
    backend.connect()
    yield ShieldedBackend(backend, build_shield(spec, ShieldOptions.joint_only()))
    backend.close()


def test_protocol_runs_through_the_shielded_mujoco_backend(robot):
    env = BackendVectorEnv(robot, n_obs_steps=2, n_action_steps=4, max_episode_steps=12)
    policy = Reach(robot.backend, offset=2.0)  # 2 rad in 0.6 s is beyond 2.175 rad/s: the shield spreads it out
    result = evaluate(policy, env, EvalConfig(n_episodes=2, policy_seeds=[0], n_envs=1), has_success=False,
                      shielded=True)
    assert result["n_episodes"] == 2 and [e["length"] for e in result["episodes"]] == [12, 12]
    per_episode = [e["shield"] for e in result["episodes"]]
    assert [c["steps"] for c in per_episode] == [12, 12] and all(c["intervened"] > 0 for c in per_episode)
    assert result["shield"]["steps"] == 24  # both episodes, not only the last one the shield still holds
    assert result["shield"]["intervened"] == sum(c["intervened"] for c in per_episode)
    assert {"return", "length", "latency_ms", "config"} <= set(result)
    q = robot.backend.read().position
    assert 0.3 < q[0] - robot.spec.home[0] < 0.6 * 2.175 + 0.05  # moved towards the goal at the velocity limit
    assert robot.shield.counts.intervened > 0 and robot.shield.counts.steps == 12
    assert env.faults == []


def test_a_fault_mid_episode_ends_it_and_the_next_episode_recovers(robot):
    env = BackendVectorEnv(robot, n_obs_steps=2, n_action_steps=4, max_episode_steps=8)
    policy = Reach(robot.backend, offset=0.1, estop_at=2)
    n_before = robot.backend.status().n_writes
    result = evaluate(policy, env, EvalConfig(n_episodes=2, policy_seeds=[0], n_envs=1), has_success=False,
                      shielded=True)
    lengths = [e["length"] for e in result["episodes"]]
    assert [e["shield"]["faults"] for e in result["episodes"]] == [1, 0] and result["shield"]["faults"] == 1
    assert lengths[0] == 4 and lengths[1] == 8  # the e-stop ended episode 0 after its first chunk
    assert len(env.faults) == 1 and "estop" in env.faults[0]
    assert robot.backend.status().n_writes - n_before == 12
