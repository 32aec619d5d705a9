"""RL fine-tuning machinery: GAE, the collector (no not-run transition in the batch), PPO ratios and the
target-KL stop, DPPO iterations with K' = 1 and K' = K, exact resume, and bad input on the command line."""

import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from robopolicy.cli import main
from robopolicy.policy import Policy
from robopolicy.rl.algorithm import AlgorithmContext, build_algorithm
from robopolicy.rl.collector import Collector
from robopolicy.rl.config import FinetuneConfig, load_finetune_config
from robopolicy.rl.critic import Critic
from robopolicy.rl.finetune import COLUMNS, TIMING_COLUMNS, Finetuner, finetune
from robopolicy.rl.gae import compute_gae
from robopolicy.rl.update import Batch, ppo_update, surrogate_loss
from robopolicy.sim.wrappers import MultiStepWrapper
from robopolicy.specs import ActionSpec, BackboneConfig, ConfigError, HeadConfig, ObsSpec, PolicyConfig
from robopolicy.train.runlog import read_log

ARENA = np.full(6, 0.25)


def tiny_policy(head: str = "diffusion", action_dim: int = 2, steps: int = 3) -> Policy:
    torch.manual_seed(0)
    config = PolicyConfig(obs=[ObsSpec("state", (6,))], action=ActionSpec(action_dim), n_obs_steps=2, horizon=4,
                          n_action_steps=4, backbone=BackboneConfig(kind="mlp", hidden_dims=[32, 32]),
                          head=HeadConfig(head, {"inference_steps": steps} if head == "diffusion" else {}))
    policy = Policy(config)
    low = np.full(action_dim, -0.25)
    policy.fit_normalizer({"state": {"min": -ARENA, "max": ARENA, "mean": 0 * ARENA, "std": ARENA},
                           "action": {"min": low, "max": -low, "mean": 0 * low, "std": -low}})
    return policy


@pytest.fixture
def checkpoint(tmp_path):
    return str(tiny_policy().save(tmp_path / "bc"))


def tiny_config(tmp_path, **overrides) -> FinetuneConfig:
    sets = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    return load_finetune_config(None, [
        "iterations=2", "ckpt_every=1", "tensorboard=false", "progress=false", "rollout.n_envs=2",
        "rollout.n_decisions=4", "update.epochs=2", "update.minibatch_size=8", "eval.every=2", "eval.n_episodes=2",
        "eval.n_envs=2", "params.finetune_steps=3", *sets], task="push_puck", out_dir=str(tmp_path / "run"))


# ---- advantages ---------------------------------------------------------------------------------------------


def test_gae_matches_a_hand_computed_example_with_truncation_and_termination():
    # one env, four decisions: chunk 0 (2 steps), chunk 1 truncated (time limit, 1 step), chunk 2 (2 steps),
    # chunk 3 terminated (1 step)
    g, lam = 0.9, 0.5
    r = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    v = torch.tensor([[0.5], [0.6], [0.7], [0.8]])
    nv = torch.tensor([[0.6], [10.0], [0.8], [99.0]])  # 10: the truncated episode's true final obs value
    n = torch.tensor([[2], [1], [2], [1]])
    term = torch.tensor([[False], [False], [False], [True]])
    trunc = torch.tensor([[False], [True], [False], [False]])
    adv, ret = compute_gae(r, v, nv, n, term, trunc, g, lam)
    d3 = 4.0 - 0.8  # terminated: no bootstrap
    d2 = 3.0 + g**2 * 0.8 - 0.7
    d1 = 2.0 + g * 10.0 - 0.6  # truncated: bootstrapped from the final observation, recursion cut
    d0 = 1.0 + g**2 * 0.6 - 0.5
    a3, a2, a1 = d3, d2 + g**2 * lam * d3, d1
    a0 = d0 + g**2 * lam * a1
    torch.testing.assert_close(adv[:, 0], torch.tensor([a0, a1, a2, a3]))
    torch.testing.assert_close(ret, adv + v)


# ---- the collector ------------------------------------------------------------------------------------------


class CountingEnv(gym.Env):
    """Reward 1 per executed step, episodes of 5 steps (terminated) with a dict observation."""

    observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (6,), np.float32)})
    action_space = gym.spaces.Box(-0.25, 0.25, (2,), np.float32)
    steps_taken = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return {"state": np.zeros(6, np.float32)}, {"is_success": False}

    def step(self, action):
        self.t += 1
        CountingEnv.steps_taken += 1
        return {"state": np.full(6, self.t / 10, np.float32)}, 1.0, self.t == 5, False, {"is_success": self.t == 5}


def test_collector_batch_holds_only_chunks_that_ran():
    policy = tiny_policy()
    algorithm = build_algorithm("dppo", policy, {"finetune_steps": 2}, AlgorithmContext(4, torch.device("cpu")))
    env = gym.vector.SyncVectorEnv([lambda: MultiStepWrapper(CountingEnv(), 2, 4)] * 2,
                                   autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    CountingEnv.steps_taken = 0
    rollout = Collector(env, algorithm.policy, algorithm).collect(6, seeds=[0, 1])
    # chunks of 4 on 5-step episodes: 4, 1 (terminated), 4, 1, 4, 1 -- never a reset call with reward 0
    assert rollout.n_steps[:, 0].tolist() == [4, 1, 4, 1, 4, 1]
    torch.testing.assert_close(rollout.reward, rollout.n_steps.float())
    assert rollout.terminated[:, 0].tolist() == [False, True] * 3
    assert rollout.env_steps == CountingEnv.steps_taken == 2 * 15
    assert [e["length"] for e in rollout.episodes] == [5] * 6 and all(e["success"] for e in rollout.episodes)
    # the value target after a termination is the true final observation (t = 5), not the reset one (zeros)
    final = algorithm.policy.encode({"state": torch.tensor(np.stack([np.full(6, 0.4), np.full(6, 0.5)]),
                                                           dtype=torch.float32)[None]})
    torch.testing.assert_close(rollout.next_cond[1, 0], final[0])


# ---- the update ---------------------------------------------------------------------------------------------


def _batch(algorithm, n: int = 16) -> Batch:
    cond = torch.randn(n, algorithm.policy.encoder.out_dim)
    decision = algorithm.act(cond)
    return Batch(cond, decision.store, torch.randn(n), torch.randn(n), torch.zeros(n))


@pytest.mark.parametrize(("algo", "params"), [("dppo", {"finetune_steps": 3}), ("ppo", {})])
def test_ratios_are_one_before_the_first_update(algo, params):
    policy = tiny_policy("regression" if algo == "ppo" else "diffusion")
    algorithm = build_algorithm(algo, policy, params, AlgorithmContext(4, torch.device("cpu")))
    batch = _batch(algorithm)
    units = algorithm.units_per_decision
    from robopolicy.rl.algorithm import Minibatch

    idx = torch.arange(16 * units)
    dec, unit = idx // units, idx % units
    mb = Minibatch(batch.cond[dec], {k: v[dec] for k, v in batch.store.items()}, unit, batch.advantages[dec])
    torch.testing.assert_close(algorithm.log_ratio(mb), torch.zeros(16 * units), atol=1e-5, rtol=0)


def test_target_kl_stops_the_whole_update():
    policy = tiny_policy()
    algorithm = build_algorithm("dppo", policy, {"finetune_steps": 3, "log_prob_reduce": "sum",
                                                 "log_prob_clamp": None}, AlgorithmContext(4, torch.device("cpu")))
    batch = _batch(algorithm)
    critic = Critic(algorithm.policy.encoder.out_dim, [16])
    cfg = load_finetune_config(None, ["update.epochs=50", "update.minibatch_size=4", "update.actor_lr=0.05",
                                      "update.target_kl=0.01"], task="push_puck").update
    actor_opt = torch.optim.Adam(algorithm.parameters(), lr=cfg.actor_lr)
    stats = ppo_update(algorithm, critic, batch, actor_opt, torch.optim.Adam(critic.parameters()), cfg)
    assert stats["kl_stopped"] == 1.0 and 1 <= stats["minibatches"] < 50 * 12


def test_a_non_finite_gradient_skips_the_step_instead_of_poisoning_the_weights():
    """A minibatch whose loss is NaN (here: the units of a decision with a NaN advantage) steps neither actor
    nor critic and is counted; the other minibatches still step."""
    policy = tiny_policy()
    algorithm = build_algorithm("dppo", policy, {"finetune_steps": 3}, AlgorithmContext(4, torch.device("cpu")))
    batch = _batch(algorithm)
    batch.advantages[0] = float("nan")
    critic = Critic(algorithm.policy.encoder.out_dim, [16])
    cfg = load_finetune_config(None, ["update.epochs=1", "update.minibatch_size=12"], task="push_puck").update
    before = [p.detach().clone() for p in algorithm.parameters()]
    actor_opt = torch.optim.Adam(algorithm.parameters(), lr=1e-3)
    stats = ppo_update(algorithm, critic, batch, actor_opt, torch.optim.Adam(critic.parameters()), cfg)
    # the 3 units of decision 0 fall into 1-3 of the 4 shuffled minibatches of 12 units
    assert stats["minibatches"] == 4 and 1 <= stats["skipped_steps"] <= 3
    params = list(algorithm.parameters()) + list(critic.parameters())
    assert all(torch.isfinite(p).all() for p in params)
    assert any(not torch.equal(b, p) for b, p in zip(before, algorithm.parameters(), strict=True))


def _ratio_gradient(ratio: float, adv: float, trust_region: str, clip: float = 0.2) -> float:
    r = torch.tensor([ratio], requires_grad=True)
    surrogate_loss(r, torch.tensor([adv]), torch.tensor([clip]), trust_region).sum().backward()
    assert r.grad is not None
    return float(r.grad)


def test_aspo_pulls_negative_advantage_ratios_back_where_clipping_lets_them_go():
    # PPO's clip: past 1 - clip a negative-advantage unit gets no gradient at all, so nothing stops the drift
    assert _ratio_gradient(0.5, -1.0, "clip") == 0.0
    # SPO's penalty: the loss is lowest at r = 1 - clip; below it, descent raises r again, above it lowers r
    assert _ratio_gradient(0.8, -1.0, "aspo") == pytest.approx(0.0, abs=1e-6)
    assert _ratio_gradient(0.5, -1.0, "aspo") < 0 < _ratio_gradient(1.0, -1.0, "aspo")
    # positive advantages keep PPO's clip under both
    for ratio in (0.7, 1.0, 1.1, 1.5):
        assert _ratio_gradient(ratio, 2.0, "aspo") == _ratio_gradient(ratio, 2.0, "clip")
    assert _ratio_gradient(1.5, 2.0, "aspo") == 0.0 and _ratio_gradient(1.0, 2.0, "aspo") == -2.0
    with pytest.raises(ConfigError, match="update.trust_region"):
        load_finetune_config(None, ['update.trust_region="spo"'], task="push_puck")


def test_bc_regularization_pulls_toward_the_pretrained_chains():
    policy = tiny_policy()
    algorithm = build_algorithm("dppo", policy, {"finetune_steps": 2, "bc_coef": 0.5},
                                AlgorithmContext(4, torch.device("cpu")))
    batch = _batch(algorithm, n=6)
    assert batch.store["bc_latents"].shape == batch.store["latents"].shape == (6, 3, 4, 2)
    from robopolicy.rl.algorithm import Minibatch

    mb = Minibatch(batch.cond, batch.store, torch.tensor([0, 1, 0, 1, 0, 1]), batch.advantages)
    loss, stats = algorithm.extra_loss(mb)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(0.5 * stats["bc_loss"], rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in algorithm.head.finetuned.net.parameters())


# ---- whole iterations, checkpoints, resume ------------------------------------------------------------------


@pytest.mark.parametrize("finetune_steps", [1, 3])
def test_one_dppo_iteration_with_k_prime_one_and_k(tmp_path, checkpoint, finetune_steps):
    config = tiny_config(tmp_path, iterations=1, **{"params.finetune_steps": finetune_steps, "eval.every": 1})
    result = finetune(config, checkpoint)
    row = read_log(result.out_dir / "log.csv")[-1]
    assert row["env_steps"] == 2 * 4 * 4 and row["minibatches"] > 0 and np.isfinite(row["approx_kl"])
    assert row["eval_success"] is not None
    loaded = Policy.load(result.checkpoints / "latest")  # an ordinary policy checkpoint
    assert loaded.config.head.name == "finetuned" and loaded.head.params.finetune_steps == finetune_steps
    assert main(["eval", str(result.checkpoints / "best"), "--task", "push_puck", "--episodes", "2", "--seeds", "1",
                 "--n-envs", "2", "--videos", "0", "--out", str(tmp_path / "eval")]) == 0


def test_actor_learning_rate_anneals_from_the_first_actor_iteration_to_the_final_value():
    from robopolicy.rl.config import UpdateConfig

    update = UpdateConfig(actor_lr=1e-4, actor_lr_final=1e-5, critic_warmup_iterations=2)
    lrs = [update.actor_lr_at(i, 13) for i in range(1, 14)]
    assert lrs[:3] == [1e-4] * 3 and lrs[-1] == pytest.approx(1e-5)
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:])) and lrs[7] == pytest.approx(5.5e-5)  # cosine midpoint
    assert UpdateConfig(actor_lr=1e-4).actor_lr_at(7, 12) == 1e-4  # absent: constant
    with pytest.raises(ConfigError, match="update.actor_lr_final"):
        UpdateConfig(actor_lr=1e-4, actor_lr_final=1e-3)


def test_a_run_steps_its_actor_optimizer_at_the_annealed_rate(tmp_path, checkpoint):
    config = tiny_config(tmp_path, iterations=3, **{"update.actor_lr": 1e-4, "update.actor_lr_final": 1e-5})
    finetuner = Finetuner(config, checkpoint)
    result = finetuner.fit()
    assert [r["actor_lr"] for r in read_log(result.out_dir / "log.csv")] == pytest.approx([1e-4, 5.5e-5, 1e-5])
    assert finetuner.actor_opt.param_groups[0]["lr"] == pytest.approx(1e-5)


def test_resume_continues_bit_for_bit(tmp_path, checkpoint):
    straight = finetune(tiny_config(tmp_path / "a", iterations=3), checkpoint)
    finetune(tiny_config(tmp_path / "b", iterations=2), checkpoint)
    resumed = finetune(tiny_config(tmp_path / "b", iterations=3), checkpoint)  # continues from latest (2)
    rows_a, rows_b = read_log(straight.out_dir / "log.csv"), read_log(resumed.out_dir / "log.csv")
    assert [r["step"] for r in rows_b] == [1, 2, 3]
    for a, b in zip(rows_a, rows_b):
        assert {k: v for k, v in a.items() if k not in TIMING_COLUMNS} == \
            {k: v for k, v in b.items() if k not in TIMING_COLUMNS}
    for (name, x), (_, y) in zip(straight.policy.state_dict().items(), resumed.policy.state_dict().items()):
        assert torch.equal(x, y), name
    assert set(COLUMNS) >= {"clip_fraction", "approx_kl", "explained_variance", "ratio_max", "chain_std"}


def test_gaussian_ppo_from_scratch_runs(tmp_path):
    config = tiny_config(tmp_path, iterations=1, algo="ppo",
                         **{"params.hidden_dims": [32], "params.stats_episodes": 1, "params.finetune_steps": 1})
    finetuner = Finetuner(config, "scratch")
    assert finetuner.policy.config.head.params["base"]["name"] == "regression"
    result = finetuner.fit()
    assert read_log(result.out_dir / "log.csv")[-1]["env_steps"] == 2 * 4 * 8  # the task's 8-step chunks


def test_fpo_from_scratch_runs_a_fresh_flow_policy(tmp_path):
    sets = ["iterations=1", "tensorboard=false", "progress=false", "rollout.n_envs=2", "rollout.n_decisions=3",
            "update.epochs=1", "update.minibatch_size=8", "eval.every=1", "eval.n_episodes=2", "eval.n_envs=2",
            "params.hidden_dims=[32]", "params.stats_episodes=1", "params.n_samples=2"]
    config = load_finetune_config(None, sets, task="push_puck", algo="fpo", out_dir=str(tmp_path / "run"))
    finetuner = Finetuner(config, "scratch")
    assert finetuner.policy.config.head.name == "flow"
    assert finetuner.policy.config.horizon == 16 and finetuner.policy.config.normalization == "min_max"
    result = finetuner.fit()
    assert read_log(result.out_dir / "log.csv")[-1]["env_steps"] == 2 * 3 * 8  # the task's 8-step chunks
    assert Policy.load(result.out_dir / "checkpoints" / "latest").config.head.name == "flow"


def test_built_in_recipes_validate():
    from robopolicy.rl.config import recipe_names
    from robopolicy.rl.registry import algorithm_class
    from robopolicy.specs import from_dict

    assert {"push_puck_dppo", "push_puck_ppo", "hopper_dppo", "hopper_fpo", "hopper_ppo"} <= set(recipe_names())
    for name in recipe_names():
        config = load_finetune_config(name, [])
        from_dict(algorithm_class(config.algo).Params, config.params, "algo.params")


def test_a_recipe_starts_from_its_base_and_overrides_table_by_table(tmp_path):
    base = load_finetune_config("push_puck_reinflow", [])
    variant = load_finetune_config("push_puck_reinflow_energy", [])
    assert variant.params == {**base.params, "steps": 2, "deterministic_eval": False, "deploy_std_scale": 0.5,
                              "std_floor": 0.02, "std_init": 0.05}
    assert variant.update == dataclasses.replace(base.update, epochs=3, actor_lr=2e-5, actor_lr_final=5e-6)
    assert variant.iterations == 430
    assert (variant.rollout, variant.eval) == (base.rollout, base.eval)
    own = tmp_path / "mine.toml"
    own.write_text('base = "push_puck_reinflow_energy"\n[update]\nactor_lr = 1e-5\n')
    mine = load_finetune_config(str(own), ["params.std_init=0.04"])
    assert (mine.update.actor_lr, mine.update.epochs, mine.params["steps"], mine.params["std_init"]) == \
        (1e-5, 3, 2, 0.04)  # the base's update table, with actor_lr overridden
    loop = tmp_path / "loop.toml"
    loop.write_text(f'base = "{loop}"\n')
    with pytest.raises(ConfigError, match="base: expected the name of another recipe"):
        load_finetune_config(str(loop), [])


# ---- bad input ----------------------------------------------------------------------------------------------


def test_bad_input_exits_2_with_a_clear_message(tmp_path, checkpoint, capsys):
    def run(ckpt: str, *extra: str) -> str:
        assert main(["finetune", ckpt, "--task", "push_puck", "--out", str(tmp_path / "bad"), *extra]) == 2
        return capsys.readouterr().err

    assert "no denoising chain" in run(str(tiny_policy("regression").save(tmp_path / "reg")))
    assert "action space" in run(str(tiny_policy(action_dim=3).save(tmp_path / "a3")))
    assert "finetune_steps" in run(checkpoint, "--set", "params.finetune_steps=4")  # K = 3
    assert "algo" in run(checkpoint, "--algo", "nope")
    (tmp_path / "bc" / "model.safetensors").write_bytes(b"not a safetensors file")
    assert "corrupt" in run(checkpoint)
