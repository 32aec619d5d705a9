"""Noise-injected chains (ReinFlow-style) for flow and consistency heads: bounded std network, exact Gaussian
log-probs against the closed form, the zero-noise chain is the head's own sampler, ratio 1 before an update."""

import math

import pytest
import torch

from robopolicy.heads import build_head
from robopolicy.rl.algorithm import AlgorithmContext, Minibatch, build_algorithm
from robopolicy.rl.noise_injection import NoiseStdNet, chain_log_prob, sample_chain
from robopolicy.specs import BackboneConfig, ConfigError
from tests.test_rl_fpo import policy

MLP = BackboneConfig(kind="mlp", hidden_dims=[32, 32])


def head(name: str, **params):
    torch.manual_seed(0)
    return build_head(name, params, action_dim=2, horizon=4, cond_dim=3, backbone=MLP)


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
    h = head("flow", inference_steps=1)
    net = NoiseStdNet(3, 1, (4, 2), floor=0.05, ceiling=0.3, init=0.12)
    with torch.no_grad():
        net.net[-1].weight.normal_(0, 0.5)  # a conditioning-dependent std
    cond = torch.randn(5, 3)
    chain = sample_chain(h, net, cond, torch.Generator().manual_seed(0))
    x0, x1 = chain.latents[:, 0], chain.latents[:, 1]
    mean = x0 + h.net(x0, torch.zeros(5), cond)
    sigma = net(cond, torch.zeros(5, dtype=torch.long))
    expected = (-((x1 - mean) ** 2) / (2 * sigma**2) - sigma.log() - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    torch.testing.assert_close(chain.log_probs[:, 0], expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(chain_log_prob(h, net, cond, chain), chain.log_probs, rtol=1e-5, atol=1e-4)


def test_consistency_log_prob_adds_the_restart_noise_in_quadrature() -> None:
    h = head("consistency", inference_steps=2)
    net = NoiseStdNet(3, 2, (4, 2), floor=0.05, ceiling=0.3, init=0.12)
    cond = torch.randn(4, 3)
    chain = sample_chain(h, net, cond, torch.Generator().manual_seed(0))
    sigmas = h.sampling_sigmas(2)
    restart = math.sqrt(sigmas[1] ** 2 - h.params.sigma_min ** 2)
    for k, base in [(0, restart), (1, 0.0)]:
        x, x_next = chain.latents[:, k], chain.latents[:, k + 1]
        mean = h.denoise(x, sigmas[k].expand(4), cond)
        std = math.sqrt(base**2 + 0.12**2)
        expected = torch.distributions.Normal(mean, std).log_prob(x_next).flatten(1).sum(1)
        torch.testing.assert_close(chain.log_probs[:, k], expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize(("name", "steps"), [("flow", 3), ("consistency", 1), ("consistency", 3)])
def test_the_zero_noise_chain_is_the_heads_own_sampler(name: str, steps: int) -> None:
    """Stepping `sampler_transition` with the sampler's own noise reproduces `sample_from_noise` exactly, so the
    deployed sampler is the chain's mean path (no injected noise)."""
    h = head(name, inference_steps=steps)
    cond = torch.randn(3, 3)
    noise = torch.randn(h.noise_shape(3, steps))
    x = noise[:, 0] * (h.params.sigma_max if name == "consistency" else 1.0)
    for k in range(steps):
        mean, base = h.sampler_transition(cond, x, k, steps)
        x = mean + base * noise[:, k + 1] if name == "consistency" and k + 1 < steps else mean
    torch.testing.assert_close(x, h.sample_from_noise(cond, noise, steps), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["flow", "consistency"])
def test_algorithm_ratio_is_one_before_an_update_and_trains_the_noise(name: str) -> None:
    pol = policy(name, inference_steps=2)
    algo = build_algorithm("reinflow", pol, {}, AlgorithmContext(n_action_steps=2, device=torch.device("cpu")))
    cond = torch.randn(5, pol.head.cond_dim)
    decision = algo.act(cond)
    assert decision.store["latents"].shape == (5, 3, 4, 2)
    batch = Minibatch(cond, decision.store, torch.zeros(5, dtype=torch.long), torch.ones(5))
    log_ratio = algo.log_ratio(batch)
    torch.testing.assert_close(log_ratio, torch.zeros(5), atol=1e-4, rtol=0)
    log_ratio.sum().backward()
    assert all(p.grad is not None for p in algo.noise.parameters())
    assert {id(p) for p in algo.noise.parameters()} <= {id(p) for p in algo.parameters()}


def test_heads_without_a_few_step_sampler_are_refused() -> None:
    with pytest.raises(ConfigError, match="reinflow fine-tunes heads with a few-step sampler"):
        build_algorithm("reinflow", policy("energy"), {}, AlgorithmContext(2, torch.device("cpu")))
    with pytest.raises(ConfigError, match="std_init"):
        build_algorithm("reinflow", policy("flow"), {"std_init": 0.5}, AlgorithmContext(2, torch.device("cpu")))
