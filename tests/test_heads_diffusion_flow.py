"""Head mathematics for the diffusion and flow heads: sampling, RL chain log-probs, CFM losses."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from robopolicy.heads import build_head
from robopolicy.specs import BackboneConfig, ConfigError

MLP = BackboneConfig(kind="mlp", hidden_dims=[32, 32])


def make(name: str, **params):
    torch.manual_seed(0)
    return build_head(name, params, action_dim=2, horizon=4, cond_dim=3, backbone=MLP)


@pytest.mark.parametrize("name", ["diffusion", "flow"])
@pytest.mark.parametrize("steps", [1, 3, 10])
def test_sample_shape_and_generator_reproducibility(name: str, steps: int) -> None:
    head = make(name)
    cond = torch.randn(5, 3)
    a = head.sample(cond, steps=steps, generator=torch.Generator().manual_seed(1))
    b = head.sample(cond, steps=steps, generator=torch.Generator().manual_seed(1))
    assert a.shape == (5, 4, 2)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
def test_diffusion_chain_mean_matches_diffusers_step(sampler: str, prediction: str) -> None:
    """The chain's Gaussian mean equals what diffusers' scheduler computes for the same step (noise = 0)."""
    head = make("diffusion", chain_sampler=sampler, chain_eta=1.0, prediction_type=prediction, min_std=1e-6)
    cond, x = torch.randn(3, 3), torch.randn(3, 4, 2)
    steps = 5
    common = dict(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", prediction_type=prediction,
                  clip_sample=True)
    for k in range(steps):
        mean, std = head.transition(cond, x, k, steps)
        if sampler == "ddim":
            sched = DDIMScheduler(**common)
            sched.set_timesteps(steps)
            t = sched.timesteps[k]
            out = head.net(x, t.expand(3), cond)
            ref = sched.step(out, t, x, eta=1.0, variance_noise=torch.zeros_like(x)).prev_sample
        else:
            sched = DDPMScheduler(**common)
            sched.set_timesteps(steps)
            t = sched.timesteps[k]
            out = head.net(x, t.expand(3), cond)
            # diffusers adds variance * noise only for t > 0; compare the mean by subtracting it out
            with torch.random.fork_rng():
                torch.manual_seed(3)
                stepped = sched.step(out, t, x, generator=torch.Generator().manual_seed(3)).prev_sample
            noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
            ref = stepped - (std if t > 0 else 0) * noise
        torch.testing.assert_close(mean, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["diffusion", "flow"])
def test_chain_log_prob_is_closed_form_gaussian(name: str) -> None:
    head = make(name)
    cond = torch.randn(4, 3)
    chain = head.sample_chain(cond, steps=4, generator=torch.Generator().manual_seed(0))
    assert chain.latents.shape == (4, 5, 4, 2) and chain.log_probs.shape == (4, 4)
    # independent closed form for step k = 2
    mean, std = head.transition(cond, chain.latents[:, 2], 2, 4)
    ref = torch.distributions.Normal(mean, std).log_prob(chain.latents[:, 3]).flatten(1).sum(-1)
    torch.testing.assert_close(chain.log_probs[:, 2], ref, rtol=1e-5, atol=1e-4)
    assert (std >= head.params.min_std - 1e-7).all()
    # batched recomputation reproduces the rollout log-probs and is differentiable
    recomputed = head.chain_log_prob(cond, chain)
    torch.testing.assert_close(recomputed, chain.log_probs, rtol=1e-5, atol=1e-4)
    recomputed.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def test_flow_cfm_losses_per_pair() -> None:
    head = make("flow")
    cond, actions = torch.randn(2, 3), torch.randn(2, 4, 2)
    noise, t = torch.randn(2, 5, 4, 2), torch.rand(2, 5)
    losses = head.cfm_losses(cond, actions, noise, t)
    assert losses.shape == (2, 5)
    # pair (1, 3) by hand
    x_t = t[1, 3] * actions[1] + (1 - t[1, 3]) * noise[1, 3]
    v = head.velocity(x_t[None], t[1, 3].reshape(1), cond[1:2])[0]
    torch.testing.assert_close(losses[1, 3], ((v - (actions[1] - noise[1, 3])) ** 2).mean())


@pytest.mark.parametrize("sampling", ["uniform", "logit_normal", "beta"])
def test_flow_time_sampling_in_unit_interval(sampling: str) -> None:
    head = make("flow", time_sampling=sampling)
    t = head.sample_time((2000,), torch.device("cpu"))
    assert t.min() >= 0 and t.max() <= 1
    if sampling == "beta":
        assert t.mean() < 0.5  # emphasises noisy times


def test_flow_midpoint_is_exact_for_linear_velocity() -> None:
    """With a velocity that is constant along the path, Euler and midpoint with 1 step agree with many steps."""
    head = make("flow", integrator="midpoint")
    for p in head.net.parameters():
        torch.nn.init.zeros_(p)
    last = head.net.net[-1]
    torch.nn.init.constant_(last.bias, 0.5)
    cond = torch.randn(2, 3)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    torch.testing.assert_close(head.sample(cond, steps=1, generator=g()), head.sample(cond, steps=8, generator=g()))


def test_predict_clean_agree_on_sigma_conventions() -> None:
    """Teachers map x = a + sigma z back to a when the network is perfect at that point (sigma -> 0)."""
    flow = make("flow")
    a = torch.randn(3, 4, 2)
    out = flow.predict_clean(a, torch.zeros(3), torch.randn(3, 3))
    torch.testing.assert_close(out, a)  # t = 1: x_t is the action itself
    diff = make("diffusion")
    assert diff.sigma_grid().shape == (100,) and (diff.sigma_grid().diff() > 0).all()


def test_params_are_validated() -> None:
    with pytest.raises(ConfigError, match="head.params.inference_steps"):
        make("diffusion", inference_steps=0)
    with pytest.raises(ConfigError, match="head.params.chain_eta"):
        make("diffusion", chain_sampler="ddim", chain_eta=0.0)
    with pytest.raises(ConfigError, match="head.params.bogus"):
        make("flow", bogus=1)
    with pytest.raises(ConfigError, match="head.name"):
        build_head("nope", {}, 2, 4, 3, MLP)


@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
@pytest.mark.parametrize("steps", [1, 4, 10])
def test_ddim_sampling_matches_a_diffusers_scheduler_loop(prediction: str, steps: int) -> None:
    head = make("diffusion", sampler="ddim", eta=0.0, prediction_type=prediction)
    cond = torch.randn(3, 3)
    ours = head.sample(cond, steps=steps, generator=torch.Generator().manual_seed(5))
    sched = DDIMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", prediction_type=prediction,
                          clip_sample=True)
    sched.set_timesteps(steps)
    x = torch.randn((3, 4, 2), generator=torch.Generator().manual_seed(5))
    for t in sched.timesteps:
        x = sched.step(head.net(x, t.expand(3), cond), t, x, eta=0.0).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)


def test_ddpm_sampling_is_stochastic_but_reproducible() -> None:
    head = make("diffusion", sampler="ddpm")
    cond = torch.zeros(2, 3)
    a = head.sample(cond, steps=5, generator=torch.Generator().manual_seed(1))
    b = head.sample(cond, steps=5, generator=torch.Generator().manual_seed(1))
    c = head.sample(cond, steps=5, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_stochastic_sampling_matches_a_diffusers_loop_fed_the_same_noise(sampler: str, monkeypatch) -> None:
    """With all noise drawn up front, slot 0 starts the chain and slot k+1 is step k's variance noise."""
    import diffusers.schedulers.scheduling_ddpm as ddpm_module

    steps = 5
    head = make("diffusion", sampler=sampler, eta=1.0)
    cond = torch.randn(3, 3)
    noise = torch.randn(head.noise_shape(3, steps), generator=torch.Generator().manual_seed(9))
    assert noise.shape == (3, steps, 4, 2)  # the last step adds no noise
    ours = head.sample_from_noise(cond, noise, steps)
    kwargs = dict(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    sched = DDPMScheduler(**kwargs) if sampler == "ddpm" else DDIMScheduler(**kwargs)
    sched.set_timesteps(steps)
    step_noise = iter(noise[:, 1:].unbind(1))
    monkeypatch.setattr(ddpm_module, "randn_tensor", lambda *args, **kw: next(step_noise))
    x = noise[:, 0]
    for t in sched.timesteps:
        out = head.net(x, t.expand(3), cond)
        if sampler == "ddpm":
            x = sched.step(out, t, x).prev_sample
        else:
            x = sched.step(out, t, x, eta=1.0, variance_noise=next(step_noise) if t > 0 else None).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)
