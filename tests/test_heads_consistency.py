"""Consistency head: parameterization, sampling, RL chain log-probabilities, distillation, bimodal toy."""

from __future__ import annotations

import pytest
import torch

from robopolicy.distill import distill_policy
from robopolicy.heads import build_head
from robopolicy.heads.consistency import ConsistencyHead
from robopolicy.policy import Policy
from robopolicy.specs import ActionSpec, BackboneConfig, ConfigError, HeadConfig, ObsSpec, PolicyConfig

HORIZON, ACTION_DIM, COND_DIM = 4, 2, 3
SMALL = BackboneConfig(kind="mlp", hidden_dims=[32, 32], time_embed_dim=16)
TRAIN_STEPS = 1000


def make_head(name: str = "consistency", backbone: BackboneConfig = SMALL, **params) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_head(name, params, ACTION_DIM, HORIZON, COND_DIM, backbone)


def bimodal_batch(batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Same observation; the chunk is all +1 or all -1 (equal odds) plus 0.05 noise."""
    sign = torch.where(torch.rand(batch, generator=gen) < 0.5, -1.0, 1.0).view(-1, 1, 1)
    actions = sign * torch.ones(batch, HORIZON, ACTION_DIM) + 0.05 * torch.randn(batch, HORIZON, ACTION_DIM,
                                                                                 generator=gen)
    return torch.ones(batch, COND_DIM), actions


def test_boundary_condition_and_sample_shapes() -> None:
    head = make_head()
    cond = torch.randn(5, COND_DIM)
    x = torch.randn(5, HORIZON, ACTION_DIM)
    torch.testing.assert_close(head.denoise(x, torch.full((5,), head.params.sigma_min), cond), x)
    for steps in (1, 3):
        assert head.sample(cond, steps=steps).shape == (5, HORIZON, ACTION_DIM)
    one = head.sample(cond, steps=1, generator=torch.Generator().manual_seed(1))
    again = head.sample(cond, steps=1, generator=torch.Generator().manual_seed(1))
    multi = head.sample(cond, steps=3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(one, again)
    assert not torch.allclose(one, multi)


def test_sampling_sigmas_start_at_sigma_max_and_descend() -> None:
    head = make_head()
    sig = head.sampling_sigmas(4)
    assert len(sig) == 4 and sig[0].item() == pytest.approx(80.0)
    assert bool((sig[1:] < sig[:-1]).all()) and sig[-1] > head.params.sigma_min


def test_chain_step_log_prob_matches_closed_form_gaussian() -> None:
    head = make_head(min_std=0.05)
    cond = torch.randn(6, COND_DIM)
    chain = head.sample_chain(cond, steps=3, generator=torch.Generator().manual_seed(2))
    sig = head.sampling_sigmas(3)
    for k, expected_std in enumerate([sig[1].item(), sig[2].item(), 0.05]):
        x_k = chain.latents[:, k]
        mean = head.denoise(x_k, sig[k].expand(6), cond)
        normal = torch.distributions.Normal(mean, torch.full_like(mean, expected_std))
        expected = normal.log_prob(chain.latents[:, k + 1]).flatten(1).sum(-1)
        torch.testing.assert_close(chain.log_probs[:, k], expected, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(head.chain_log_prob(cond, chain), chain.log_probs, rtol=1e-4, atol=1e-3)
    assert chain.latents[:, 0].std() > 40  # x_0 = sigma_max * z


def test_chain_log_prob_gradient_reaches_parameters() -> None:
    head = make_head()
    cond = torch.randn(4, COND_DIM)
    chain = head.sample_chain(cond, steps=2, generator=torch.Generator().manual_seed(3))
    head.chain_log_prob(cond, chain).sum().backward()
    grads = [p.grad for p in head.net.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("field,value", [("sigma_min", 100.0), ("inference_steps", 0), ("min_std", 0.0),
                                         ("ct_final_scales", 2)])
def test_invalid_params_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"head.params.{field}"):
        make_head(**{field: value})


def test_curriculum_doubles_the_discretization() -> None:
    head = make_head(ct_initial_scales=10, ct_final_scales=40, ct_total_steps=30)
    assert head.num_scales() == 11
    cond, actions = bimodal_batch(8, torch.Generator().manual_seed(0))
    for _ in range(10):
        head.loss(cond, actions)
    assert int(head.ct_step) == 10 and head.num_scales() == 21
    head.ct_step.fill_(1000)
    assert head.num_scales() == 41


@pytest.mark.parametrize("teacher_name", ["flow", "diffusion"])
def test_distillation_uses_teacher_without_saving_it(teacher_name: str) -> None:
    teacher = make_head(teacher_name)
    student = make_head(mode="distillation")
    cond, actions = bimodal_batch(8, torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="set_teacher"):
        student.loss(cond, actions)
    student.set_teacher(teacher)
    student.loss(cond, actions).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert not any(k.startswith("_teacher") for k in student.state_dict())
    assert set(student.state_dict()) == set(make_head().state_dict())


def test_distill_policy_shares_conditioning_and_freezes_encoder() -> None:
    config = PolicyConfig(obs=[ObsSpec("state", (3,))], action=ActionSpec(dim=ACTION_DIM), n_obs_steps=2,
                          horizon=HORIZON, n_action_steps=2, backbone=SMALL,
                          head=HeadConfig(name="flow"))
    config.encoder.low_dim_out = 8
    torch.manual_seed(0)
    teacher = Policy(config)
    student = distill_policy(teacher, {"cd_scales": 6})
    obs = {"state": torch.randn(5, 2, 3)}
    torch.testing.assert_close(student.encode(obs), teacher.encode(obs))
    assert not any(p.requires_grad for p in student.encoder.parameters())
    assert isinstance(student.head, ConsistencyHead) and student.head.teacher is teacher.head
    loss = student.loss({"obs": obs, "action": torch.randn(5, HORIZON, ACTION_DIM)})
    loss.backward()
    assert student.head.params.mode == "distillation" and torch.isfinite(loss)
    assert not any(k.startswith("head._teacher") for k in student.state_dict())


def test_multistep_sampling_restarts_from_the_noise_slots() -> None:
    """Step 0 denoises sigma_max * noise[:, 0]; each restart adds sqrt(sigma^2 - sigma_min^2) * noise[:, k]."""
    head = make_head()
    cond = torch.randn(4, COND_DIM)
    noise = torch.randn(head.noise_shape(4, 3), generator=torch.Generator().manual_seed(1))
    sigmas = head.sampling_sigmas(3).tolist()
    x = sigmas[0] * noise[:, 0]
    for k, sigma in enumerate(sigmas):
        a = head.denoise(x, torch.full((4,), sigma), cond)  # the tensor (training) form of the same function
        if k + 1 < len(sigmas):
            x = a + (sigmas[k + 1] ** 2 - head.params.sigma_min ** 2) ** 0.5 * noise[:, k + 1]
    torch.testing.assert_close(head.sample_from_noise(cond, noise, 3), a, rtol=1e-4, atol=1e-5)
