"""PPO: normalizer statistics, a short training run, safetensors round trip, D4RL-style collection, learning."""

import json

import numpy as np
import pytest
import torch

from robopolicy.nn.normalizer import RunningNorm
from robopolicy.rl.ppo import PPOConfig, train
from robopolicy.sim.experts.ppo_agent import PPOExpert, load_agent


def test_running_norm_matches_numpy_over_batches():
    data = np.random.default_rng(0).normal(2.0, 3.0, (500, 4))
    norm = RunningNorm(4)
    for chunk in np.array_split(data, 7):
        norm.update(torch.as_tensor(chunk))
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(0), rtol=1e-3)
    np.testing.assert_allclose(norm.var.numpy(), data.var(0), rtol=1e-3)


def test_short_training_saves_loadable_agent_and_collects(tmp_path):
    config = PPOConfig(task="reacher", total_steps=1024, n_envs=2, n_steps=256, n_minibatches=4, n_epochs=2,
                       levels={"medium": -1e9})
    log = train(config, tmp_path / "ppo", progress=False)
    assert len(log["updates"]) == 2 and np.isfinite(log["updates"][-1]["mean_return_20"])
    assert "medium" in log["levels"] and (tmp_path / "ppo" / "medium" / "model.safetensors").exists()
    agent, meta = load_agent(tmp_path / "ppo" / "final")
    assert meta["task"] == "reacher" and meta["obs_dim"] == 10 and meta["act_dim"] == 2
    assert agent.norm.count.item() > 1000  # the observation statistics were saved with the weights

    expert = PPOExpert.load(tmp_path / "ppo" / "final", stochastic=False)
    obs = {"state": np.zeros(10, np.float32)}
    np.testing.assert_array_equal(expert.act(obs), expert.act(obs))

    from robopolicy.data.replay_buffer import ReplayBuffer
    from robopolicy.sim.collect import Recipe, collect

    recipe = Recipe(name="d4rl", task="reacher", output=str(tmp_path / "r.zarr"), n_episodes=2, expert="ppo",
                    checkpoint=str(tmp_path / "ppo" / "final"), only_successful=False)
    report = collect(recipe)
    rb = ReplayBuffer.open(tmp_path / "r.zarr")
    assert rb.n_episodes == 2 and rb.n_steps == 100 and "reward" in rb.keys
    rewards = [rb.get_episode(i)["reward"].sum() for i in range(2)]
    assert report["mean_return"] == pytest.approx(float(np.mean(rewards)), rel=1e-5)
    assert json.loads((tmp_path / "r.zarr.report.json").read_text())["kept"] == report["kept"] == 2


def test_ppo_learns_reacher(tmp_path):
    """8 updates (8k steps) raise the mean return of the last 20 episodes well above the random policy's."""
    config = PPOConfig(task="reacher", total_steps=8192, n_envs=8, n_steps=128, n_minibatches=4, n_epochs=10,
                       lr=3e-3)
    returns = [u["mean_return_20"] for u in train(config, tmp_path / "ppo", progress=False)["updates"]]
    assert len(returns) == 8
    assert returns[-1] > returns[0] + 5, returns  # about -61 -> -51 here
