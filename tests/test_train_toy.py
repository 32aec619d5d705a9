"""The bimodal toy task, and that BC training on it learns both modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robopolicy.policy import Policy
from robopolicy.train.toy import BimodalToyDataset, mode_coverage, toy_policy_config


def test_items_match_the_sequence_dataset_layout() -> None:
    data = BimodalToyDataset(size=100, horizon=6, action_dim=3, n_obs_steps=2, seed=0)
    item = data[7]
    assert set(item) == {"obs", "action"} and set(item["obs"]) == {"state"}
    assert item["obs"]["state"].shape == (2, 2) and item["obs"]["state"].dtype == torch.float32
    assert item["action"].shape == (6, 3) and item["action"].dtype == torch.float32
    assert len(data) == 100
    assert data.obs_spec() == {"state": {"shape": [2], "kind": "low_dim"}}


def test_actions_are_two_equally_likely_modes_independent_of_the_state() -> None:
    data = BimodalToyDataset(size=4000, seed=1)
    actions = torch.stack([data[i]["action"] for i in range(len(data))])
    states = torch.stack([data[i]["obs"]["state"] for i in range(len(data))])
    coverage = mode_coverage(actions)
    assert coverage["between"] == 0.0
    assert coverage["plus"] == pytest.approx(0.5, abs=0.03)
    sign = actions.mean((1, 2)).sign()
    assert abs(torch.corrcoef(torch.stack([sign, states[:, 0, 0]]))[0, 1]) < 0.06
    assert (actions - sign[:, None, None]).std() == pytest.approx(0.05, rel=0.1)


def test_stats_seed_and_coverage() -> None:
    data = BimodalToyDataset(size=500, horizon=4, action_dim=2, seed=2)
    stats = data.stats()
    assert set(stats) == {"state", "action"}
    for key in stats:
        assert set(stats[key]) == {"min", "max", "mean", "std"}
        assert all(v.shape == (2,) and v.dtype == np.float32 for v in stats[key].values())
    assert np.all(stats["state"]["min"] >= -1) and np.all(stats["state"]["max"] <= 1)
    assert np.allclose(stats["action"]["std"], 1.0, atol=0.05)
    assert torch.equal(BimodalToyDataset(size=50, seed=2)[3]["action"], BimodalToyDataset(size=50, seed=2)[3]["action"])
    assert not torch.equal(BimodalToyDataset(size=50, seed=2)[3]["obs"]["state"],
                           BimodalToyDataset(size=50, seed=3)[3]["obs"]["state"])
    chunks = torch.tensor([1.0, -1.0, 0.0, 0.9]).reshape(4, 1, 1).expand(4, 3, 2)
    assert mode_coverage(chunks) == {"plus": 0.5, "minus": 0.25, "between": 0.25}


@pytest.mark.parametrize("head", ["diffusion", "flow"])
def test_toy_policy_config_builds_and_predicts(head: str) -> None:
    config = toy_policy_config(head, horizon=8, action_dim=3)
    assert (config.horizon, config.action.dim, config.backbone.kind) == (8, 3, "mlp")
    policy = Policy(config)
    policy.fit_normalizer(BimodalToyDataset(size=64, horizon=8, action_dim=3).stats())
    assert policy.predict_action({"state": torch.zeros(2, 1, 2)}).shape == (2, 8, 3)
