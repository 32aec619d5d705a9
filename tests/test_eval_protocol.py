"""The evaluation protocol: repeatable, seed ranges apart, and a full report on disk."""

import json

from robopolicy.eval.protocol import EvalConfig, evaluate
from robopolicy.eval.run import evaluate_checkpoint
from robopolicy.sim import load_task, make_vector_env
from robopolicy.sim.experts import make_expert
from robopolicy.sim.experts.adapter import ExpertPolicy


def _noisy_expert():
    return ExpertPolicy(lambda: make_expert("push_puck", noise=0.02, pause_prob=0.2))


def test_train_and_test_seed_ranges_are_disjoint():
    train = EvalConfig(n_episodes=1000, split="train").env_seeds
    test = EvalConfig(n_episodes=1000, split="test").env_seeds
    assert not set(train) & set(test)


def test_evaluation_is_repeatable_and_seeds_matter():
    task = load_task("push_puck")
    env = make_vector_env(task, 3, n_obs_steps=1, n_action_steps=1)
    config = EvalConfig(n_episodes=4, policy_seeds=[0, 1], n_envs=3)
    first = evaluate(_noisy_expert(), env, config)
    second = evaluate(_noisy_expert(), env, config)
    env.close()
    assert first["episodes"] == second["episodes"]
    assert len(first["episodes"]) == 8
    by_seed = {s: [e["length"] for e in first["episodes"] if e["policy_seed"] == s] for s in (0, 1)}
    assert by_seed[0] != by_seed[1]  # policy seeds drive the expert's noise
    assert [e["env_seed"] for e in first["episodes"][:4]] == [100000, 100001, 100002, 100003]


def test_report_files(tmp_path):
    config = EvalConfig(n_episodes=3, policy_seeds=[0], n_envs=2, n_videos=2)
    result = evaluate_checkpoint("expert", "push_puck", config, tmp_path, video_every=2)
    assert 0.0 <= result["success"]["ci95"][0] <= result["success"]["rate"] <= result["success"]["ci95"][1]
    assert result["latency_ms"]["per_call_mean"] > 0 and result["length"]["mean"] > 0
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["n_episodes"] == 3 and len(saved["episodes"]) == 3
    assert (tmp_path / "summary.png").stat().st_size > 1000
    videos = sorted(p.name for p in (tmp_path / "videos").iterdir())
    assert videos == ["seed100000.mp4", "seed100001.mp4"]


def test_locomotion_reports_returns_without_success(tmp_path):
    class Zero(ExpertPolicy):
        def __init__(self):
            super().__init__(lambda: None)
            self.config.n_action_steps = 4

        def predict_action(self, obs):
            import torch

            return torch.zeros(obs["state"].shape[0], 4, 3)

    task = load_task("hopper")
    env = make_vector_env(task, 2, n_obs_steps=1, n_action_steps=4)
    result = evaluate(Zero(), env, EvalConfig(n_episodes=2, policy_seeds=[0], n_envs=2), has_success=task.has_success)
    env.close()
    assert "success" not in result and result["return"]["mean"] > 0
