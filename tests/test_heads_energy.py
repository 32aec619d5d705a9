"""Energy head: IBC (InfoNCE; DFO / Langevin inference), EBT (unrolled descent, energy score), RL chain."""

from __future__ import annotations

import pytest
import torch

from robopolicy.heads import build_head
from robopolicy.specs import BackboneConfig, ConfigError

HORIZON, ACTION_DIM, COND_DIM = 4, 2, 3
SMALL = BackboneConfig(kind="mlp", hidden_dims=[32, 32], time_embed_dim=16)


def make_head(backbone: BackboneConfig = SMALL, **params) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_head("energy", params, ACTION_DIM, HORIZON, COND_DIM, backbone)


def bimodal_batch(batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Same observation; the chunk is all +1 or all -1 (equal odds) plus 0.05 noise."""
    sign = torch.where(torch.rand(batch, generator=gen) < 0.5, -1.0, 1.0).view(-1, 1, 1)
    actions = sign * torch.ones(batch, HORIZON, ACTION_DIM) + 0.05 * torch.randn(batch, HORIZON, ACTION_DIM,
                                                                                 generator=gen)
    return torch.ones(batch, COND_DIM), actions


@pytest.mark.parametrize("params", [dict(inference="dfo", dfo_samples=64), dict(inference="langevin"),
                                    dict(variant="ebt", inference="descent")])
def test_sample_shapes_range_and_reproducibility(params: dict) -> None:
    head = make_head(**params)
    cond = torch.randn(5, COND_DIM)
    with torch.no_grad():  # Policy.predict_action calls sample under no_grad; grad_x E must still work
        a = head.sample(cond, generator=torch.Generator().manual_seed(1))
        b = head.sample(cond, generator=torch.Generator().manual_seed(1))
        fewer = head.sample(cond, steps=1, generator=torch.Generator().manual_seed(1))
    assert a.shape == (5, HORIZON, ACTION_DIM) and not a.requires_grad
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, fewer)
    if params.get("variant") != "ebt":
        assert a.abs().max() <= 1.0


@pytest.mark.parametrize("variant", ["ibc", "ebt"])
def test_loss_is_finite_and_trains_all_parameters(variant: str) -> None:
    head = make_head(variant=variant, num_counter_examples=8, contrastive_weight=0.5)
    loss = head.loss(*bimodal_batch(6, torch.Generator().manual_seed(0)))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def test_mcmc_counter_examples_follow_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """With negative_langevin_steps, the InfoNCE negatives are Langevin samples of the current energy."""
    head = make_head(num_counter_examples=8, negative_langevin_steps=3)
    seen = []
    original = head.energy
    monkeypatch.setattr(head, "energy", lambda x, cond: seen.append(x) or original(x, cond))
    cond, actions = bimodal_batch(6, torch.Generator().manual_seed(0))
    torch.manual_seed(3)
    start = torch.empty(6, 8, HORIZON, ACTION_DIM).uniform_(-1.0, 1.0)  # what the chain starts from
    torch.manual_seed(3)
    loss = head.loss(cond, actions)
    loss.backward()
    assert torch.isfinite(loss)
    assert len(seen) == 3 + 1  # three Langevin steps on the negatives, then one InfoNCE evaluation
    negatives = seen[-1].view(6, 9, HORIZON, ACTION_DIM)[:, 1:]
    assert negatives.abs().max() <= 1.0 and not negatives.requires_grad
    assert (negatives - start).abs().max() > 1e-3  # moved by the Langevin steps
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def test_local_counter_examples_are_the_demonstration_perturbed_at_each_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last `local_negatives` counter-examples sit around the demonstration, one std per slot in turn."""
    stds = (0.01, 0.3)
    head = make_head(num_counter_examples=8, local_negatives=4, local_negative_stds=stds)
    seen = []
    original = head.energy
    monkeypatch.setattr(head, "energy", lambda x, cond: seen.append(x) or original(x, cond))
    cond, actions = bimodal_batch(256, torch.Generator().manual_seed(0))
    actions = actions.clamp(-0.5, 0.5)  # inside the box, so no perturbation is clamped
    head.loss(cond, actions).backward()
    candidates = seen[-1].view(256, 9, HORIZON, ACTION_DIM)
    torch.testing.assert_close(candidates[:, 0], actions)  # the demonstration comes first
    offsets = candidates[:, 5:] - actions.unsqueeze(1)
    for slot in range(4):
        assert abs(offsets[:, slot].std().item() - stds[slot % 2]) < 0.1 * stds[slot % 2]
    far = (candidates[:, 1:5] - actions.unsqueeze(1)).abs().mean()
    assert far > 0.3  # the others stay uniform over the box
    assert all(p.grad is not None for p in head.parameters())


def test_gradient_penalty_bounds_the_slope_between_data_and_counter_examples() -> None:
    """The penalty is zero within the margin, positive beyond it, and training with it flattens the energy on
    the segments from the demonstrations to the counter-examples (where plain InfoNCE makes it steep)."""
    cond, actions = bimodal_batch(16, torch.Generator().manual_seed(0))
    losses = {}
    for name, params in {"plain": {}, "wide": dict(gradient_penalty=1.0, gradient_margin=1e9),
                         "tight": dict(gradient_penalty=1.0, gradient_margin=0.0)}.items():
        head = make_head(num_counter_examples=8, **params)
        torch.manual_seed(5)
        losses[name] = head.loss(cond, actions)
    torch.testing.assert_close(losses["wide"], losses["plain"])  # within the margin: InfoNCE alone
    assert losses["tight"] > losses["plain"]

    def slope_after_training(**params) -> float:
        head = make_head(num_counter_examples=8, **params)
        opt = torch.optim.Adam(head.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(1)
        for _ in range(60):
            opt.zero_grad()
            head.loss(*bimodal_batch(32, gen)).backward()
            opt.step()
        between = 0.5 * (actions + torch.empty_like(actions).uniform_(-1, 1))
        return float(head.energy_grad(between, cond, create_graph=False).flatten(1).norm(dim=1).mean())

    torch.manual_seed(2)
    plain = slope_after_training()
    torch.manual_seed(2)
    penalized = slope_after_training(gradient_penalty=10.0, gradient_margin=1.0)
    assert penalized < 0.5 * plain and penalized < 2.0


def test_sample_with_energy_reports_the_final_energy() -> None:
    head = make_head(variant="ebt", inference="descent")
    cond = torch.randn(4, COND_DIM)
    with torch.no_grad():
        actions, energy = head.sample_with_energy(cond, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(energy, head.energy(actions, cond))
    assert energy.shape == (4,)


def test_ebt_energy_ranks_demonstrations_above_off_mode_chunks() -> None:
    """After training, descent lowers the energy and a chunk between the modes scores as less certain."""
    head = make_head(variant="ebt", inference="descent", contrastive_weight=1.0, num_counter_examples=8,
                     descent_steps=3)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        loss = head.loss(*bimodal_batch(32, gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
    cond = torch.ones(200, COND_DIM)
    start = torch.zeros(200, HORIZON, ACTION_DIM)
    with torch.no_grad():
        _, final_energy = head.sample_with_energy(cond, generator=torch.Generator().manual_seed(1))
        between = head.energy(start, cond)
    assert final_energy.mean() < between.mean()


@pytest.mark.parametrize("variant", ["ibc", "ebt"])
def test_chain_step_log_prob_matches_closed_form_gaussian(variant: str) -> None:
    head = make_head(variant=variant, langevin_steps=4, langevin_noise_start=0.3, langevin_noise_end=0.05,
                     descent_steps=3, min_std=0.1)
    cond = torch.randn(6, COND_DIM)
    chain = head.sample_chain(cond, generator=torch.Generator().manual_seed(2))
    steps = chain.steps
    assert steps == (4 if variant == "ibc" else 3)
    eta = head.params.langevin_step_size if variant == "ibc" else head.params.descent_step_size
    for k in range(steps):
        x_k = chain.latents[:, k].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(head.energy(x_k, cond).sum(), x_k)
        noise = 0.3 + (0.05 - 0.3) * k / (steps - 1) if variant == "ibc" else 0.0
        normal = torch.distributions.Normal(x_k.detach() - eta * grad, max(noise, 0.1))
        expected = normal.log_prob(chain.latents[:, k + 1]).flatten(1).sum(-1)
        torch.testing.assert_close(chain.log_probs[:, k], expected, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(head.chain_log_prob(cond, chain), chain.log_probs, rtol=1e-4, atol=1e-3)
    assert chain.latents[:, 0].abs().max() <= 1.0  # x_0 is uniform in the action box


def test_chain_log_prob_gradient_reaches_parameters() -> None:
    head = make_head(langevin_steps=3)
    cond = torch.randn(4, COND_DIM)
    chain = head.sample_chain(cond, generator=torch.Generator().manual_seed(3))
    head.chain_log_prob(cond, chain).sum().backward()
    # Output biases shift E by a constant and so cannot move grad_x E; every weight matrix must get a gradient.
    weights = [p for name, p in head.named_parameters() if name.endswith("weight")]
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in weights)


@pytest.mark.parametrize("field,value", [("num_counter_examples", 0), ("dfo_shrink", 1.5),
                                         ("langevin_step_size", 0.0), ("min_std", -1.0), ("local_negatives", 33),
                                         ("local_negative_stds", ()), ("local_negative_stds", (0.1, 0.0)),
                                         ("gradient_penalty", -1.0), ("gradient_margin", -0.5)])
def test_invalid_params_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"head.params.{field}"):
        make_head(**{field: value})
