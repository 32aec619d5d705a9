"""Stored artifacts: checkpoints of format version 1 still load, and every head still predicts the golden actions.

The files under tests/fixtures/ are written by tests/fixtures/make_fixtures.py, on purpose only; a failure here
means a change altered what saved policies do (regenerate and say why) or broke reading old checkpoints (fix it).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from robopolicy.checkpoint import CONFIG_FILE, FORMAT
from robopolicy.heads.registry import PRETRAINED_HEADS
from robopolicy.policy import Policy
from tests.fixtures.make_fixtures import CHECKPOINTS, GOLDEN, observations, predict

STORED_HEADS = sorted(p.name for p in CHECKPOINTS.iterdir() if p.is_dir())


def test_every_pretrained_head_has_a_stored_checkpoint() -> None:
    assert sorted(PRETRAINED_HEADS) == STORED_HEADS


@pytest.mark.parametrize("head", STORED_HEADS)
def test_a_version_1_checkpoint_loads_and_predicts_the_golden_actions(head: str) -> None:
    meta = json.loads((CHECKPOINTS / head / CONFIG_FILE).read_text())
    assert (meta["format"], meta["format_version"]) == (FORMAT, 1)
    golden = load_file(str(GOLDEN))
    torch.testing.assert_close(observations()["state"], golden["obs.state"], rtol=0, atol=0)
    policy = Policy.load(CHECKPOINTS / head)
    assert policy.head.name == head
    actions = predict(policy)
    assert actions.shape == (3, 4, 2)
    torch.testing.assert_close(actions, golden[f"actions.{head}"], rtol=1e-5, atol=1e-6)


def test_the_golden_actions_use_the_ema_weights() -> None:
    """The stored EMA weights differ from the raw ones, so the golden actions pin which set a load serves."""
    golden = load_file(str(GOLDEN))["actions.regression"]
    raw = predict(Policy.load(CHECKPOINTS / "regression", use_ema=False))
    assert not torch.allclose(raw, golden, atol=1e-3)
