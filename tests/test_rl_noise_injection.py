"""Noise-injected chains (ReinFlow-style) for flow and consistency heads: bounded std network, exact Gaussian
log-probs against the closed form, the zero-noise chain is the head's own sampler, ratio 1 before an update,
and the fine-tuned policy (noise network included) round-trips through a checkpoint."""

import math

import pytest
import torch

from robopolicy.heads import build_head
from robopolicy.heads.noise_injected import NoiseStdNet
from robopolicy.policy import Policy
from robopolicy.rl.algorithm import AlgorithmContext, Minibatch, build_algorithm
from robopolicy.specs import BackboneConfig, ConfigError
from tests.test_rl_fpo import policy

MLP = BackboneConfig(kind="mlp", hidden_dims=[32, 32])
CPU = torch.device("cpu")


def noisy_head(base: str, steps: int, **settings):
    torch.manual_seed(0)
    params = {"base": {"name": base, "params": {"inference_steps": steps}}, "steps": steps,
              "std_floor": 0.05, "std_ceiling": 0.3, "std_init": 0.12, **settings}
    return build_head("noise_injected", params, action_dim=2, horizon=4, cond_dim=3, backbone=MLP)


def reinflow(pol: Policy, **params):
    return build_algorithm("reinflow", pol, params, AlgorithmContext(n_action_steps=2, device=CPU))


def test_noise_std_is_bounded_and_starts_at_init() -> None:
    net = NoiseStdNet(cond_dim=3, steps=2, chunk_shape=(4, 2), floor=0.05, ceiling=0.3, init=0.1)
    k = torch.tensor([0, 1, 1])
    torch.testing.assert_close(net(torch.randn(3, 3), k), torch.full((3, 4, 2), 0.1))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 30.0)
    std = net(100 * torch.randn(64, 3), torch.randint(0, 2, (64,)))
    assert std.min() >= 0.05 and std.max() <= 0.3
    with pytest.raises(ValueError, match="floor < ceiling"):
        NoiseStdNet(3, 2, (4, 2), floor=0.3, ceiling=0.1, init=0.2)


def test_one_step_flow_log_prob_equals_the_closed_form() -> None:
    """1 Euler step from x_0: x_1 ~ N(x_0 + v(x_0, 0), sigma^2), sigma from the noise network."""
    h = noisy_head("flow", 1)
    with torch.no_grad():
        h.noise.net[-1].weight.normal_(0, 0.5)  # a conditioning-dependent std
    cond = torch.randn(5, 3)
    chain = h.sample_chain(cond, generator=torch.Generator().manual_seed(0))
    x0, x1 = chain.latents[:, 0], chain.latents[:, 1]
    mean = x0 + h.base.net(x0, torch.zeros(5), cond)
    sigma = h.noise(cond, torch.zeros(5, dtype=torch.long))
    expected = (-((x1 - mean) ** 2) / (2 * sigma**2) - sigma.log() - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    torch.testing.assert_close(chain.log_probs[:, 0], expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(h.chain_log_prob(cond, chain), chain.log_probs, rtol=1e-5, atol=1e-4)


def test_consistency_log_prob_adds_the_restart_noise_in_quadrature() -> None:
    h = noisy_head("consistency", 2)
    cond = torch.randn(4, 3)
    chain = h.sample_chain(cond, generator=torch.Generator().manual_seed(0))
    sigmas = h.base.sampling_sigmas(2)
    restart = math.sqrt(sigmas[1] ** 2 - h.base.params.sigma_min ** 2)
    for k, base in [(0, restart), (1, 0.0)]:
        x, x_next = chain.latents[:, k], chain.latents[:, k + 1]
        mean = h.base.denoise(x, sigmas[k].expand(4), cond)
        expected = torch.distributions.Normal(mean, math.sqrt(base**2 + 0.12**2)).log_prob(x_next).flatten(1).sum(1)
        torch.testing.assert_close(chain.log_probs[:, k], expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize(("name", "steps"), [("flow", 3), ("consistency", 1), ("consistency", 3)])
def test_the_zero_noise_chain_is_the_heads_own_sampler(name: str, steps: int) -> None:
    """Stepping `sampler_transition` with the sampler's own noise reproduces `sample_from_noise` exactly, so the
    deployed sampler is the chain's mean path (no injected noise)."""
    h = noisy_head(name, steps)
    cond = torch.randn(3, 3)
    noise = torch.randn(h.noise_shape(3, steps))
    x = noise[:, 0] * (h.base.params.sigma_max if name == "consistency" else 1.0)
    for k in range(steps):
        mean, base = h.base.sampler_transition(cond, x, k, steps)
        x = mean + base * noise[:, k + 1] if name == "consistency" and k + 1 < steps else mean
    torch.testing.assert_close(x, h.sample_from_noise(cond, noise, steps), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("name", "steps"), [("flow", 2), ("consistency", 1), ("consistency", 3)])
def test_stochastic_deployment_is_the_chain_ppo_trained(name: str, steps: int) -> None:
    """With deterministic = false, sample_from_noise draws exactly the chain `sample_chain` draws from the same
    random stream (the policy whose log-probabilities PPO optimized), not the wrapped sampler."""
    h = noisy_head(name, steps, deterministic=False)
    cond = torch.randn(4, 3)
    chain = h.sample_chain(cond, generator=torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(7)  # the same draws, in sample_chain's order: x_0, then one per step
    noise = torch.stack([torch.randn(4, 4, 2, generator=gen) for _ in range(steps + 1)], 1)
    assert h.noise_shape(4, steps) == noise.shape
    torch.testing.assert_close(h.sample_from_noise(cond, noise, steps), chain.actions, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", [0.4, 0.0])
@pytest.mark.parametrize("name", ["flow", "consistency"])
def test_the_deployed_chain_injects_the_scaled_std(name: str, scale: float) -> None:
    """deploy_std_scale s: each deployed step draws from N(mean_k, base_k^2 + (s sigma_phi)^2); s = 0 leaves the
    wrapped sampler's own noise only."""
    h = noisy_head(name, 2, deterministic=False, deploy_std_scale=scale)
    cond, noise = torch.randn(4, 3), torch.randn(4, 3, 4, 2)
    x = h.base.latent_from_noise(noise[:, 0])
    for k in range(2):
        mean, base = h.base.sampler_transition(cond, x, torch.full((4,), k), 2)
        x = mean + (base ** 2 + (scale * h.noise(cond, torch.full((4,), k))) ** 2).sqrt() * noise[:, k + 1]
    torch.testing.assert_close(h.sample_from_noise(cond, noise, 2), x)
    unscaled = noisy_head(name, 2, deterministic=False).sample_from_noise(cond, noise, 2)
    assert not torch.allclose(unscaled, x)


def test_reinflow_sets_how_the_checkpoint_deploys(tmp_path) -> None:
    algo = reinflow(policy("consistency", inference_steps=2), deterministic_eval=False, deploy_std_scale=0.7)
    assert algo.policy.head.params.deterministic is False
    algo.policy.save(tmp_path / "ckpt")
    loaded = Policy.load(tmp_path / "ckpt")
    assert loaded.head.params.deterministic is False and loaded.head.params.deploy_std_scale == 0.7
    obs = {"state": torch.randn(3, 1, 3)}
    torch.manual_seed(1)
    a = loaded.predict_action(obs)
    torch.manual_seed(1)
    torch.testing.assert_close(loaded.predict_action(obs), a)  # reproducible from the seed
    assert reinflow(loaded, deterministic_eval=True).policy.head.params.deterministic is True  # on resume too


@pytest.mark.parametrize("name", ["flow", "consistency"])
def test_ratio_is_one_before_an_update_and_the_noise_is_trained(name: str) -> None:
    pol = policy(name, inference_steps=2)
    algo = reinflow(pol)
    assert algo.policy.head.name == "noise_injected"
    cond = torch.randn(5, pol.head.cond_dim)
    decision = algo.act(cond)
    assert decision.store["latents"].shape == (5, 3, 4, 2) and decision.store["log_prob"].shape == (5,)
    log_ratio = algo.log_ratio(Minibatch(cond, decision.store, torch.zeros(5, dtype=torch.long), torch.ones(5)))
    torch.testing.assert_close(log_ratio, torch.zeros(5), atol=1e-4, rtol=0)
    log_ratio.sum().backward()
    noise_params = list(algo.policy.head.noise.parameters())
    assert all(p.grad is not None for p in noise_params)
    assert {id(p) for p in noise_params} <= {id(p) for p in algo.parameters()}


def test_pretrained_weights_carry_over_and_the_checkpoint_round_trips(tmp_path) -> None:
    pretrained = policy("consistency", inference_steps=1)
    obs = {"state": torch.randn(3, 1, 3)}
    torch.manual_seed(5)
    before = pretrained.predict_action(obs)
    algo = reinflow(pretrained)
    torch.manual_seed(5)
    torch.testing.assert_close(algo.policy.predict_action(obs), before)  # deployment: the head's own sampler
    with torch.no_grad():
        algo.policy.head.noise.net[-1].bias.add_(0.5)
    algo.policy.save(tmp_path / "ckpt")
    loaded = Policy.load(tmp_path / "ckpt")
    for key, value in algo.policy.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    resumed = reinflow(loaded)  # a fine-tuned checkpoint is accepted unchanged
    assert resumed.policy is loaded


def test_heads_without_a_few_step_sampler_are_refused() -> None:
    with pytest.raises(ConfigError, match="reinflow fine-tunes heads with a few-step sampler"):
        reinflow(policy("energy"))
    with pytest.raises(ConfigError, match="std_init"):
        reinflow(policy("flow"), std_init=0.5)
    with pytest.raises(ConfigError, match="deploy_std_scale"):
        reinflow(policy("flow"), deploy_std_scale=0.5)  # the deterministic deployment injects no noise to scale
