"""FPO (flow head) and its energy-head surrogate: the ratio is 1 before an update, the guards hold, and on a
1-D bandit whose best action is known the policy moves toward it (and away with the advantage's sign flipped)."""

import pytest
import torch

from robopolicy.policy import Policy
from robopolicy.rl.algorithm import AlgorithmContext, Minibatch, build_algorithm
from robopolicy.rl.config import UpdateConfig
from robopolicy.rl.critic import Critic
from robopolicy.rl.update import Batch, ppo_update
from robopolicy.specs import ActionSpec, BackboneConfig, ConfigError, HeadConfig, ObsSpec, PolicyConfig

CPU = torch.device("cpu")


def policy(head: str, horizon: int = 4, action_dim: int = 2, **params) -> Policy:
    torch.manual_seed(0)
    config = PolicyConfig(obs=[ObsSpec("state", (3,))], action=ActionSpec(action_dim), n_obs_steps=1,
                          horizon=horizon, n_action_steps=min(2, horizon),
                          backbone=BackboneConfig(kind="mlp", hidden_dims=[32, 32]), head=HeadConfig(head, params))
    return Policy(config)


def fpo(pol: Policy, **params):
    return build_algorithm("fpo", pol, params, AlgorithmContext(n_action_steps=pol.config.n_action_steps, device=CPU))


def units(algo, cond: torch.Tensor, store: dict, adv: torch.Tensor) -> Minibatch:
    """Every (decision, unit) pair of a rollout as one minibatch."""
    n = algo.units_per_decision
    rows = torch.arange(cond.shape[0]).repeat_interleave(n)
    return Minibatch(cond[rows], {k: v[rows] for k, v in store.items()}, torch.arange(n).repeat(cond.shape[0]),
                     adv[rows])


@pytest.mark.parametrize("ratio", ["per_sample", "mean"])
@pytest.mark.parametrize(("head", "params"), [("flow", {"integrator": "euler", "inference_steps": 3}),
                                              ("flow", {"integrator": "midpoint", "inference_steps": 1}),
                                              ("energy", {"langevin_steps": 5})])
def test_ratio_is_one_before_the_first_update(ratio: str, head: str, params: dict) -> None:
    algo = fpo(policy(head, **params), ratio=ratio, n_samples=4, steps=2)
    cond = torch.randn(6, algo.policy.head.cond_dim)
    decision = algo.act(cond)
    assert decision.actions.shape == (6, 4, 2)
    expected_units = 4 if ratio == "per_sample" and head == "flow" else 1
    assert algo.units_per_decision == expected_units
    log_ratio = algo.log_ratio(units(algo, cond, decision.store, torch.zeros(6)))
    assert log_ratio.shape == (6 * expected_units,)
    torch.testing.assert_close(log_ratio, torch.zeros_like(log_ratio), atol=1e-5, rtol=0)
    log_ratio.sum().backward()  # differentiable in the head's parameters
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in algo.parameters())


def test_loss_difference_is_clamped_and_executed_steps_only() -> None:
    algo = fpo(policy("flow"), max_log_ratio=0.5)
    cond = torch.randn(4, algo.policy.head.cond_dim)
    store = algo.act(cond).store
    with torch.no_grad():
        for p in algo.parameters():
            p.add_(torch.randn_like(p))
    lr = algo.log_ratio(units(algo, cond, store, torch.zeros(4)))
    assert lr.abs().max() <= 0.5 + 1e-6 and lr.abs().max() > 0.4
    # the losses average over the executed steps (2 of 4) only
    full = algo.policy.head.cfm_losses(cond, store["action"], store["noise"], store["t"])
    executed = algo.surrogate.losses(cond, store)
    assert not torch.allclose(full, executed)
    whole_chunk = fpo(algo.policy, executed_only=False).surrogate.losses(cond, store)
    torch.testing.assert_close(whole_chunk, full, rtol=0, atol=0)


def test_summed_losses_are_the_mean_times_the_executed_elements() -> None:
    pol = policy("flow")
    cond = torch.randn(4, pol.head.cond_dim)
    store = fpo(pol).act(cond).store
    summed = fpo(pol, loss_reduce="sum").surrogate.losses(cond, store)
    torch.testing.assert_close(summed, fpo(pol).surrogate.losses(cond, store) * 2 * 2)  # 2 executed steps x 2 dims
    with pytest.raises(ConfigError, match="loss_reduce"):
        fpo(policy("energy"), loss_reduce="sum")


def test_action_drift_is_zero_before_an_update_and_the_chunks_rms_change_after() -> None:
    pol = policy("flow", inference_steps=3)
    algo = fpo(pol, max_action_drift=0.1)
    cond = torch.randn(5, pol.head.cond_dim)
    store = algo.act(cond).store
    torch.testing.assert_close(algo.action_drift(cond, store), torch.zeros(5), atol=1e-6, rtol=0)
    with torch.no_grad():
        for p in algo.parameters():
            p.add_(0.1 * torch.randn_like(p))
        moved = pol.head.integrate(cond, store["x0"], 3)
    expected = (moved - store["action"])[:, :2].pow(2).mean((1, 2)).sqrt()  # the 2 executed steps
    torch.testing.assert_close(algo.action_drift(cond, store), expected)
    assert expected.min() > 0
    for bad in (0.0, -1.0):
        with pytest.raises(ConfigError, match="max_action_drift"):
            fpo(policy("flow"), max_action_drift=bad)
    with pytest.raises(ConfigError, match="max_action_drift"):
        fpo(policy("energy"), max_action_drift=0.1)


def test_the_update_stops_once_the_actions_drift_past_the_bound() -> None:
    """A bound no step can stay under ends the update after its first step; without one every minibatch runs,
    and the drift logged is the actions' after the update."""
    stats = {}
    for bound in (None, 1e-9):
        algo = fpo(policy("flow", inference_steps=2), max_action_drift=bound, n_samples=2)
        cond = torch.randn(64, algo.policy.head.cond_dim)
        store = algo.act(cond).store
        critic = Critic(algo.policy.head.cond_dim, [8])
        adv = torch.randn(64)
        stats[bound] = ppo_update(algo, critic, Batch(cond, store, adv, adv, torch.zeros(64)),
                                  torch.optim.Adam(algo.parameters(), lr=1e-2), torch.optim.Adam(critic.parameters()),
                                  UpdateConfig(epochs=2, minibatch_size=32, clip=0.2))
        if bound is not None:
            with torch.no_grad():
                probe = algo.action_drift(cond, store).mean()
            assert stats[bound]["action_drift"] == pytest.approx(float(probe), rel=1e-5)
    assert stats[None]["minibatches"] == 2 * 4 and stats[None]["kl_stopped"] == 0 and "action_drift" not in stats[None]
    assert stats[1e-9]["minibatches"] == 1 and stats[1e-9]["kl_stopped"] == 1 and stats[1e-9]["action_drift"] > 1e-9


def test_zero_noise_evaluation_is_deterministic_and_saved() -> None:
    pol = policy("flow")
    algo = fpo(pol)
    assert pol.config.head.params["initial_noise_scale"] == 0.0
    obs = {"state": torch.randn(3, 1, 3)}
    torch.testing.assert_close(algo.policy.predict_action(obs), algo.policy.predict_action(obs))
    torch.manual_seed(1)
    a = algo.act(algo.policy.encode(obs)).actions
    torch.manual_seed(2)
    assert not torch.allclose(a, algo.act(algo.policy.encode(obs)).actions)  # rollouts still explore


def test_rollout_steps_are_the_deployed_steps() -> None:
    """`steps` sets the rollouts' integration steps and the saved policy's, so the policy fine-tuned is the one
    deployed; without it the pretrained head's steps stay."""
    pol = policy("flow", inference_steps=3)
    fpo(pol, steps=6, eval_zero_noise=False)
    assert pol.head.params.inference_steps == 6 and pol.config.head.params["inference_steps"] == 6
    assert "initial_noise_scale" not in pol.config.head.params
    kept = policy("flow", inference_steps=3)
    fpo(kept)
    assert kept.head.params.inference_steps == 3 and kept.config.head.params["inference_steps"] == 3


def test_wrong_head_is_a_clear_config_error() -> None:
    with pytest.raises(ConfigError, match="fpo fine-tunes the flow or energy head"):
        fpo(policy("diffusion"))


BEST = 0.6


def bandit_distances(head: str, sign: float, ratio: str = "per_sample", iterations: int = 15,
                     **params) -> tuple[float, float]:
    """|mean action - best| before and after FPO, through the shared PPO update, on a 1-D bandit with reward
    -(a - BEST)^2 (one decision per episode, so the advantage is the reward minus its mean)."""
    algo = fpo(policy(head, horizon=1, action_dim=1, **params), ratio=ratio, n_samples=4)
    actor_opt = torch.optim.Adam(algo.parameters(), lr=3e-3)
    cond_dim = algo.policy.head.cond_dim
    critic = Critic(cond_dim, [8])
    critic_opt = torch.optim.Adam(critic.parameters(), lr=1e-3)
    update = UpdateConfig(epochs=4, minibatch_size=512, clip=0.2)
    cond = torch.zeros(128, cond_dim)
    torch.manual_seed(0)
    before = abs(algo.act(cond).actions.mean().item() - BEST)
    for _ in range(iterations):
        decision = algo.act(cond)
        reward = -(decision.actions[:, 0, 0] - BEST) ** 2
        adv = sign * (reward - reward.mean()) / (reward.std() + 1e-8)
        ppo_update(algo, critic, Batch(cond, decision.store, adv, reward, torch.zeros(128)), actor_opt, critic_opt,
                   update)
    torch.manual_seed(0)
    return before, abs(algo.act(cond).actions.mean().item() - BEST)


@pytest.mark.parametrize("ratio", ["per_sample", "mean"])
def test_flow_bandit_moves_toward_the_best_action(ratio: str) -> None:
    """The untrained flow policy's actions average near 0, the best action is 0.6: the distance halves, and
    grows instead when the advantage's sign is flipped."""
    before, after = bandit_distances("flow", +1.0, ratio, inference_steps=2)
    assert after < 0.5 * before
    before, after = bandit_distances("flow", -1.0, ratio, inference_steps=2)
    assert after > before + 0.1


def test_energy_bandit_moves_toward_the_best_action() -> None:
    before, after = bandit_distances("energy", +1.0, iterations=10, langevin_steps=8)
    assert after < 0.5 * before
    before, after = bandit_distances("energy", -1.0, iterations=10, langevin_steps=8)
    assert after > before + 0.1
