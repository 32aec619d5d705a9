"""The evaluation protocol: repeatable, seed ranges apart, and a full report on disk."""

import json
import shutil

import pytest
import torch

from robopolicy.eval.protocol import EvalConfig, evaluate
from robopolicy.eval.run import evaluate_checkpoint, load_eval_policy
from robopolicy.policy import Policy
from robopolicy.sim import make_vector_env
from robopolicy.sim.experts import make_expert
from robopolicy.sim.experts.adapter import ExpertPolicy
from robopolicy.specs import BackboneConfig, HeadConfig, PolicyConfig
from robopolicy.task import load_task
from tests.conftest import tiny_stats


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
            return torch.zeros(obs["state"].shape[0], 4, 3)

    task = load_task("hopper")
    env = make_vector_env(task, 2, n_obs_steps=1, n_action_steps=4)
    result = evaluate(Zero(), env, EvalConfig(n_episodes=2, policy_seeds=[0], n_envs=2), has_success=task.has_success)
    env.close()
    assert "success" not in result and result["return"]["mean"] > 0


def test_a_checkpoint_evaluates_the_same_compiled_ahead_of_time(tmp_path):
    """`robopolicy eval --compile aot` runs deployment inference: same seeds, same actions, same episodes."""
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("AOTInductor's CPU backend needs a C++ compiler")
    task = load_task("push_puck")
    h = task.horizons
    torch.manual_seed(0)
    policy = Policy(PolicyConfig(obs=task.obs, action=task.action, n_obs_steps=h.n_obs_steps, horizon=h.horizon,
                                 n_action_steps=h.n_action_steps, head=HeadConfig("flow", {"inference_steps": 2}),
                                 backbone=BackboneConfig(kind="mlp", hidden_dims=[32, 32], time_embed_dim=16)))
    policy.fit_normalizer(tiny_stats({"state": 6}, 2))
    policy.save(tmp_path / "ckpt")
    config = EvalConfig(n_episodes=2, policy_seeds=[0], n_envs=2, n_videos=0)
    result = evaluate_checkpoint(str(tmp_path / "ckpt"), "push_puck", config, tmp_path / "eval", compile_mode="aot",
                                 aot_cache=str(tmp_path / "aot"))
    latency = result["latency_ms"]
    assert result["n_episodes"] == 2 and latency["n_calls"] > 2
    assert latency["first_call"] > 100 * latency["per_call_p95"]  # compiling, kept out of the per-call figures
    assert len(list((tmp_path / "aot").glob("PredictFromNoise-b2-s2-*.pt2"))) == 1
    # the evaluated policy acts as the eager one does (whole episodes are chaotic: contacts amplify 1e-7 differences)
    eager, aot = (load_eval_policy(str(tmp_path / "ckpt"), task, compile_mode=m, aot_cache=str(tmp_path / "aot"))
                  for m in ("none", "aot"))
    env = make_vector_env(task, 2, n_obs_steps=h.n_obs_steps, n_action_steps=h.n_action_steps)
    obs, _ = env.reset(seed=config.env_seeds)
    env.close()
    chunks = []
    for policy in (eager, aot):
        torch.manual_seed(0)
        chunks.append(policy.predict_action({"state": torch.as_tensor(obs["state"])}))
    torch.testing.assert_close(chunks[1], chunks[0], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="applies to policy checkpoints"):
        evaluate_checkpoint("expert", "push_puck", config, tmp_path / "expert", compile_mode="aot")
