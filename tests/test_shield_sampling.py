"""Constraint-aware sampling: with every sampling step projected onto the shield's joint limits, a chunk executed
from the anchoring motion passes the shield without interventions; without the projection it does not, and the
hook changes nothing while unset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robopolicy.hal.constrained_sampling import ChunkProjection, constrained_infer
from robopolicy.hal.shield.hardware import ShieldOptions, build_shield
from robopolicy.hal.shield.stages import Motion
from robopolicy.policy import Policy
from robopolicy.specs import ActionSpec, BackboneConfig, HeadConfig, ObsSpec, PolicyConfig
from tests.test_deploy import SPEC

HOME = np.array(SPEC.home)


def wide_policy(head: str) -> Policy:
    """Untrained: its chunks jump up to +-2 rad around home, far beyond one period's acceleration."""
    torch.manual_seed(0)
    params = {"inference_steps": 4}
    config = PolicyConfig(obs=[ObsSpec("joint_position", (7,))], action=ActionSpec(7), n_obs_steps=1, horizon=8,
                          n_action_steps=8, backbone=BackboneConfig(kind="mlp", hidden_dims=[32]),
                          head=HeadConfig(head, params))
    policy = Policy(config)
    h = HOME.astype(np.float32)
    stats = {"min": h - 2, "max": h + 2, "mean": h, "std": np.ones(7, np.float32)}
    policy.fit_normalizer({"joint_position": stats, "action": stats})
    return policy.eval()


def interventions(chunk: np.ndarray, workspace: bool) -> int:
    shield = build_shield(SPEC, ShieldOptions(collision=False, workspace=workspace))
    shield.reset(HOME)
    return sum(shield(action).intervened for action in chunk)


@pytest.mark.parametrize("head", ["flow", "diffusion"])
@pytest.mark.parametrize("workspace", [False, True])
def test_projected_chunks_pass_the_shield_untouched(head, workspace) -> None:
    policy = wide_policy(head)
    shield = build_shield(SPEC, ShieldOptions(collision=False, workspace=workspace))
    projection = ChunkProjection(policy, shield, workspace=workspace)
    infer = constrained_infer(policy, projection)
    history = {"joint_position": HOME[None].astype(np.float32)}
    torch.manual_seed(1)
    plain = policy.predict_action({"joint_position": torch.as_tensor(history["joint_position"][None])})[0].numpy()
    torch.manual_seed(1)
    projected = infer(history)
    assert projection.calls == 4  # once per sampling step
    assert policy.head.step_projection is None  # removed again after the plan
    assert interventions(plain.astype(np.float64), workspace) > 0
    assert interventions(projected, workspace) == 0


def test_unset_hook_leaves_sampling_unchanged() -> None:
    policy = wide_policy("flow")
    obs = {"joint_position": torch.as_tensor(HOME[None, None], dtype=torch.float32)}
    a = policy.predict_action(obs, generator=torch.Generator().manual_seed(3))
    policy.head.step_projection = lambda x: x
    b = policy.predict_action(obs, generator=torch.Generator().manual_seed(3))
    policy.head.step_projection = None
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_projection_needs_an_anchor_and_joint_positions() -> None:
    policy = wide_policy("flow")
    shield = build_shield(SPEC, ShieldOptions.joint_only())
    with pytest.raises(RuntimeError, match="anchor"):
        ChunkProjection(policy, shield)(torch.zeros(1, 8, 7))
    projection = ChunkProjection(policy, shield)
    projection.anchor = Motion.at_rest(HOME)
    out = projection(torch.full((1, 8, 7), float("nan")))
    assert torch.isfinite(out).all()
