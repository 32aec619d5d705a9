"""The diffusion-trained energy head: its prediction is Tweedie's formula on the gradient of one scalar energy,
training lowers the energy of the data below the space between its modes, and its denoising chain has the exact
Gaussian log-probabilities DPPO fine-tunes (ratio 1 before an update, gradients reach the energy's weights)."""

from __future__ import annotations

import pytest
import torch

from robopolicy.heads import build_head
from robopolicy.heads.energy_diffusion import EnergyDiffusionHead
from robopolicy.heads.finetuned import FinetunedHead
from robopolicy.specs import BackboneConfig, ConfigError, HeadConfig

MLP = BackboneConfig(kind="mlp", hidden_dims=[64, 64], time_embed_dim=16)


def make(**params) -> EnergyDiffusionHead:
    torch.manual_seed(0)
    head = build_head("energy_diffusion", {"num_train_timesteps": 20, "inference_steps": 4, **params}, 2, 4, 3, MLP)
    assert isinstance(head, EnergyDiffusionHead)
    return head


def test_prediction_is_tweedie_on_a_finite_difference_gradient_of_the_energy() -> None:
    head = make().double()
    cond, x = torch.randn(3, 3, dtype=torch.float64), torch.randn(3, 4, 2, dtype=torch.float64)
    t = torch.tensor([2, 9, 17])
    grad = torch.zeros_like(x)
    h = 1e-6
    for i in range(4):
        for j in range(2):
            step = torch.zeros_like(x)
            step[:, i, j] = h
            grad[:, i, j] = (head.energy(x + step, t, cond) - head.energy(x - step, t, cond)) / (2 * h)
    abar = head.alphas_cumprod.double()[t].view(-1, 1, 1)
    with torch.no_grad():
        prediction = head.denoiser_output(x, t, cond)
    torch.testing.assert_close(prediction, (x - (1 - abar) * grad) / abar.sqrt(), rtol=1e-6, atol=1e-6)


def test_only_the_clean_sample_prediction_is_accepted() -> None:
    with pytest.raises(ConfigError, match="head.params.prediction_type"):
        make(prediction_type="epsilon")


def test_training_puts_the_data_below_the_space_between_its_modes() -> None:
    """Bimodal chunks (+0.8 or -0.8 everywhere): after training, the energy near the clean end of the chain is
    lower on either mode than at 0, between them, and sampling lands on the modes."""
    head = make(sampler="ddpm", inference_steps=20)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    cond = torch.zeros(128, 3)
    for _ in range(300):
        sign = torch.randint(0, 2, (128, 1, 1)).float() * 2 - 1
        loss = head.loss(cond, 0.8 * sign.expand(128, 4, 2))
        opt.zero_grad()
        loss.backward()
        opt.step()
    t = torch.full((3,), 2)
    chunks = torch.stack([torch.full((4, 2), 0.8), torch.full((4, 2), -0.8), torch.zeros(4, 2)])
    with torch.no_grad():
        energy = head.energy(chunks, t, cond[:3])
        samples = head.sample(torch.zeros(200, 3), generator=torch.Generator().manual_seed(0)).flatten(1).mean(1)
    assert energy[0] < energy[2] and energy[1] < energy[2], energy
    assert (samples > 0.5).float().mean() > 0.25 and (samples < -0.5).float().mean() > 0.25, samples


def test_the_denoising_chain_log_probs_are_exact_and_reach_the_energy() -> None:
    config = FinetunedHead.wrap(HeadConfig("energy_diffusion", {"num_train_timesteps": 20, "inference_steps": 4}),
                                steps=4, finetune_steps=2)
    torch.manual_seed(0)
    head = build_head(config.name, config.params, 2, 4, 3, MLP)
    cond = torch.randn(5, 3)
    chain = head.sample_chain(cond, generator=torch.Generator().manual_seed(1))
    log_prob = head.chain_log_prob(cond, chain)
    torch.testing.assert_close(log_prob.detach(), chain.log_probs, rtol=1e-5, atol=1e-4)  # PPO's ratio starts at 1
    log_prob.sum().backward()
    grads = [p.grad for p in head.finetuned.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in head.base.parameters())


def test_parameter_gradients_stay_finite_with_large_pre_activations() -> None:
    """The fine-tuning update differentiates the prediction, itself a gradient; with the time MLP's
    pre-activations far past exp's float32 range (as training grew them on push_puck) it must not give NaN."""
    head = make()
    with torch.no_grad():
        head.net.time_embed[1].weight.mul_(500.0)
    cond, x = torch.randn(4, 3), torch.randn(4, 4, 2)
    prediction = head.denoiser_output(x, torch.tensor([0, 5, 10, 19]), cond)
    grads = torch.autograd.grad(prediction.sum(), list(head.parameters()), allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)
