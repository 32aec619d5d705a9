"""The fine-tuned denoising chain (heads/finetuned.py): closed-form step log-probs, K' = 1 and K' = K, std
floors, (decision, step) log-probs, and deployment running the fine-tuned steps after a save/load round trip."""

import math

import pytest
import torch

from robopolicy.heads import build_head
from robopolicy.heads.finetuned import FinetunedHead
from robopolicy.policy import Policy
from robopolicy.specs import ActionSpec, BackboneConfig, ConfigError, HeadConfig, ObsSpec, PolicyConfig
from tests.conftest import tiny_stats

MLP = BackboneConfig(kind="mlp", hidden_dims=[32, 32], time_embed_dim=16)


def make(steps: int = 5, finetune_steps: int = 2, **base_params) -> FinetunedHead:
    torch.manual_seed(0)
    config = FinetunedHead.wrap(HeadConfig("diffusion", base_params), steps=steps, finetune_steps=finetune_steps)
    return build_head(config.name, config.params, action_dim=2, horizon=4, cond_dim=3, backbone=MLP)


def _closed_form(head, sampler: str, eta: float, x: torch.Tensor, cond: torch.Tensor, k: int, steps: int):
    """DDPM posterior / DDIM (eta) step mean and std written out from the cumulative alphas."""
    ratio = 100 // steps
    t = (steps - 1 - k) * ratio
    acp = head.alphas_cumprod
    a_t = float(acp[t])
    a_prev = float(acp[t - ratio]) if t - ratio >= 0 else 1.0
    eps = head.net(x, torch.full((x.shape[0],), t), cond)
    x0 = ((x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp(-1, 1)
    if sampler == "ddpm":
        beta = 1 - a_t / a_prev
        mean = math.sqrt(a_prev) * beta / (1 - a_t) * x0 + math.sqrt(a_t / a_prev) * (1 - a_prev) / (1 - a_t) * x
        var = beta * (1 - a_prev) / (1 - a_t)
    else:
        var = eta**2 * (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
        mean = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - var, 0.0)) * eps  # raw eps, as diffusers
    return mean, math.sqrt(var)


@pytest.mark.parametrize(("sampler", "eta"), [("ddpm", 1.0), ("ddim", 0.7)])
def test_step_log_prob_is_the_closed_form_gaussian(sampler: str, eta: float) -> None:
    head = make(steps=5, finetune_steps=5, chain_sampler=sampler, chain_eta=eta)
    cond = torch.randn(6, 3)
    chain = head.sample_chain(cond, generator=torch.Generator().manual_seed(1))
    floor = head.params.min_log_prob_std
    for k in range(5):
        mean, std = _closed_form(head.finetuned, sampler, eta, chain.latents[:, k], cond, k, 5)
        ref = torch.distributions.Normal(mean, max(std, floor)).log_prob(chain.latents[:, k + 1]).flatten(1).sum(-1)
        torch.testing.assert_close(chain.log_probs[:, k], ref, rtol=1e-4, atol=1e-3)
        step = torch.full((6,), k)
        torch.testing.assert_close(head.chain_log_prob(cond, chain, step), ref, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(head.chain_log_prob(cond, chain), chain.log_probs, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("finetune_steps", [1, 5])
def test_chain_keeps_only_the_finetuned_steps(finetune_steps: int) -> None:
    head = make(steps=5, finetune_steps=finetune_steps)
    cond = torch.randn(3, 3)
    chain = head.sample_chain(cond, generator=torch.Generator().manual_seed(0))
    assert chain.first_step == 5 - finetune_steps
    assert chain.latents.shape == (3, finetune_steps + 1, 4, 2) and chain.log_probs.shape == (3, finetune_steps)
    assert chain.actions.abs().max() <= head.params.action_clip
    trainable = {n for n, p in head.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("finetuned.") for n in trainable)
    # subsampled (decision, step) pairs give the stored per-step log-probs, with gradient to the copy only
    step = torch.tensor([finetune_steps - 1, 0, finetune_steps // 2])
    lp = head.chain_log_prob(cond, chain, step)
    torch.testing.assert_close(lp, chain.log_probs[torch.arange(3), step], rtol=1e-5, atol=1e-4)
    lp.sum().backward()
    assert all(p.grad is None for p in head.base.parameters())


def test_sampling_and_log_prob_floors_are_apart() -> None:
    torch.manual_seed(0)
    config = FinetunedHead.wrap(HeadConfig("diffusion", {}), steps=4, finetune_steps=4, min_std=0.3,
                                min_log_prob_std=0.05)
    head = build_head(config.name, config.params, 2, 4, 3, MLP)
    cond = torch.randn(400, 3)
    chain = head.sample_chain(cond)
    _, mean, std = head.chain_transitions(cond, chain)
    assert std.min() >= 0.05 - 1e-7 and std.min() < 0.3  # log-probs: the lower floor (the last step's std is ~0)
    spread = (chain.latents[:, -1] - mean.view(400, 4, 4, 2)[:, -1]).std()
    assert spread > 0.25  # sampling: the exploration floor 0.3 (clipped at +-1, so a little below)


def test_bad_chains_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="finetune_steps"):
        make(steps=3, finetune_steps=4)
    with pytest.raises(ConfigError, match="no denoising chain"):
        config = FinetunedHead.wrap(HeadConfig("regression", {}), steps=1, finetune_steps=1)
        build_head(config.name, config.params, 2, 4, 3, MLP)


def test_deployment_runs_the_finetuned_steps_after_save_and_load(tmp_path) -> None:
    torch.manual_seed(0)
    config = PolicyConfig(obs=[ObsSpec("state", (3,))], action=ActionSpec(2), n_obs_steps=1, horizon=4,
                          n_action_steps=2, backbone=MLP,
                          head=FinetunedHead.wrap(HeadConfig("diffusion", {}), steps=4, finetune_steps=2))
    policy = Policy(config)
    policy.fit_normalizer(tiny_stats({"state": 3}, 2))
    obs = {"state": torch.randn(5, 1, 3)}

    def predict(p: Policy) -> torch.Tensor:
        torch.manual_seed(3)
        return p.predict_action(obs)

    before = predict(policy)
    torch.testing.assert_close(predict(policy), before)  # deterministic chain: only the start noise is random
    with torch.no_grad():
        for p in policy.head.finetuned.net.parameters():
            p.mul_(0.5)
    changed = predict(policy)
    assert not torch.allclose(changed, before)  # the fine-tuned copy runs at deployment
    policy.save(tmp_path / "ckpt")
    loaded = Policy.load(tmp_path / "ckpt")
    assert loaded.config.head.name == "finetuned"
    torch.testing.assert_close(predict(loaded), changed)
    torch.testing.assert_close(predict(loaded.compile()), changed, rtol=1e-4, atol=1e-4)


def test_an_untouched_finetuned_policy_deploys_as_the_pretrained_one() -> None:
    """Deterministic deployment runs the wrapped head's own sampler (DDIM, eta = 0) with the copied weights."""
    from robopolicy.rl.algorithm import AlgorithmContext, build_algorithm

    torch.manual_seed(0)
    config = PolicyConfig(obs=[ObsSpec("state", (3,))], action=ActionSpec(2), n_obs_steps=1, horizon=4,
                          n_action_steps=2, backbone=MLP, head=HeadConfig("diffusion", {"inference_steps": 5}))
    pretrained = Policy(config)
    pretrained.fit_normalizer(tiny_stats({"state": 3}, 2))
    tuned = build_algorithm("dppo", pretrained, {"finetune_steps": 2},
                            AlgorithmContext(2, torch.device("cpu"))).policy
    obs = {"state": torch.randn(5, 1, 3)}
    torch.manual_seed(4)
    expected = pretrained.predict_action(obs)
    torch.manual_seed(4)
    torch.testing.assert_close(tuned.predict_action(obs), expected)


def test_policy_chain_log_prob_matches_the_sampled_chain() -> None:
    torch.manual_seed(0)
    config = PolicyConfig(obs=[ObsSpec("state", (3,))], action=ActionSpec(2), n_obs_steps=1, horizon=4,
                          n_action_steps=2, backbone=MLP,
                          head=FinetunedHead.wrap(HeadConfig("diffusion", {}), steps=4, finetune_steps=3))
    policy = Policy(config)
    policy.fit_normalizer(tiny_stats({"state": 3}, 2))
    obs = {"state": torch.randn(5, 1, 3)}
    chain = policy.sample_chain(obs)
    torch.testing.assert_close(policy.chain_log_prob(obs, chain), chain.log_probs, rtol=1e-5, atol=1e-4)
    step = torch.tensor([0, 1, 2, 1, 0])
    torch.testing.assert_close(policy.chain_log_prob(obs, chain, step), chain.log_probs[torch.arange(5), step],
                               rtol=1e-5, atol=1e-4)
