"""Policy.compile(): compiled inference gives the eager actions for the same generator or the same global seed."""

from __future__ import annotations

import shutil

import pytest
import torch

from robopolicy.policy import Policy
from robopolicy.specs import HeadConfig
from tests.conftest import tiny_stats
from tests.test_policy_checkpoint import make_policy, obs_batch, tiny_config

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="torch.compile's CPU backend needs a C++ compiler")


@pytest.mark.parametrize("head", ["diffusion", "flow", "consistency"])
def test_compiled_sampling_matches_eager(head: str) -> None:
    eager = make_policy(head=head, rgb=False).eval()
    compiled = make_policy(head=head, rgb=False).compile()
    obs = obs_batch(3, rgb=False)
    for steps in (None, 2):
        expected = eager.predict_action(obs, steps=steps, generator=torch.Generator().manual_seed(4))
        got = compiled.predict_action(obs, steps=steps, generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # weights updated in place after compiling are used (module guards are skipped, parameters are not constants)
    with torch.no_grad():
        for p_eager, p_compiled in zip(eager.parameters(), compiled.parameters()):
            p_eager.mul_(0.5)
            p_compiled.mul_(0.5)
    torch.testing.assert_close(compiled.predict_action(obs, generator=torch.Generator().manual_seed(5)),
                               eager.predict_action(obs, generator=torch.Generator().manual_seed(5)),
                               atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("head", ["diffusion", "flow", "consistency"])
def test_compiled_whole_predict_matches_eager_under_the_global_seed(head: str) -> None:
    """Camera-free policies compile all of predict_action, the noise draw included (DDPM draws at every step)."""
    eager = make_policy(head=head, rgb=False).eval()
    compiled = make_policy(head=head, rgb=False).compile()
    obs = obs_batch(3, rgb=False)
    actions = {}
    for name, policy in (("eager", eager), ("compiled", compiled)):
        torch.manual_seed(11)
        actions[name] = [policy.predict_action(obs), policy.predict_action(obs, steps=2)]
    for got, expected in zip(actions["compiled"], actions["eager"]):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert not torch.equal(actions["eager"][0], actions["eager"][1])  # fresh noise per call, not a replay


def test_compiled_predict_follows_a_refitted_normalizer_and_takes_numpy() -> None:
    eager = make_policy(head="flow", rgb=False).eval()
    compiled = make_policy(head="flow", rgb=False).compile()
    obs = obs_batch(2, rgb=False)
    compiled.predict_action(obs)
    stats = {k: {s: 3 * v for s, v in d.items()} for k, d in tiny_stats({"state": 3}, 2).items()}
    for policy in (eager, compiled):
        policy.fit_normalizer(stats)  # in-place buffer updates after compiling must be seen
    torch.manual_seed(3)
    expected = eager.predict_action(obs)
    for observation in (obs, {k: v.numpy() for k, v in obs.items()}):
        torch.manual_seed(3)
        torch.testing.assert_close(compiled.predict_action(observation), expected, atol=1e-5, rtol=1e-4)


def test_compiled_predict_rejects_bad_observations_like_eager() -> None:
    compiled = make_policy(head="flow", rgb=False).compile()
    compiled.predict_action(obs_batch(2, rgb=False))
    with pytest.raises(KeyError, match="missing key 'state'"):
        compiled.predict_action({"joints": torch.zeros(2, 2, 3)})
    with pytest.raises(ValueError, match=r"'state': expected shape \(B, 2, 3\)"):
        compiled.predict_action({"state": torch.zeros(2, 2, 4)})


def test_compiled_camera_policy_matches_eager() -> None:
    """With cameras the encoder stays eager and the sampling loop is compiled."""
    eager = make_policy(head="flow", rgb=True).eval()
    compiled = make_policy(head="flow", rgb=True).compile()
    obs = obs_batch(2, rgb=True)
    torch.testing.assert_close(compiled.predict_action(obs, generator=torch.Generator().manual_seed(2)),
                               eager.predict_action(obs, generator=torch.Generator().manual_seed(2)),
                               atol=1e-5, rtol=1e-4)


def test_compiled_closed_loop_matches_eager() -> None:
    eager = make_policy(head="flow", rgb=False).eval()
    compiled = make_policy(head="flow", rgb=False).compile()
    actions = {}
    for name, policy in (("eager", eager), ("compiled", compiled)):
        policy.reset()
        torch.manual_seed(7)  # the global generator drives sampling when none is passed
        actions[name] = torch.stack([policy.select_action({"state": torch.full((2, 3), float(t))}) for t in range(6)])
    torch.testing.assert_close(actions["compiled"], actions["eager"], atol=1e-5, rtol=1e-4)


def policy_with_head(name: str, params: dict | None = None, rgb: bool = False) -> Policy:
    torch.manual_seed(0)
    cfg = tiny_config(rgb=rgb)
    cfg.head = HeadConfig(name, params or {})
    policy = Policy(cfg)
    policy.fit_normalizer(tiny_stats({"state": 3}, 2))
    return policy


def test_compiled_regression_matches_eager() -> None:
    eager = policy_with_head("regression").eval()
    compiled = policy_with_head("regression")
    compiled.load_state_dict(eager.state_dict())
    obs = obs_batch(3, rgb=False)
    torch.testing.assert_close(compiled.compile().predict_action(obs), eager.predict_action(obs))


ENERGY_SAMPLERS = [("energy", {"variant": "ebt", "inference": "descent", "descent_steps": 3}),
                   ("energy", {"variant": "ibc", "inference": "langevin", "langevin_steps": 4}),
                   ("energy_diffusion", {"num_train_timesteps": 20, "inference_steps": 3, "sampler": "ddpm"})]


@pytest.mark.parametrize(("head", "params"), ENERGY_SAMPLERS)
def test_compiled_energy_head_traces_its_input_gradients(head: str, params: dict) -> None:
    """Gradient descent / Langevin / denoising on the energy, noise included, in one graph: same actions as eager."""
    eager = policy_with_head(head, params).eval()
    compiled = policy_with_head(head, params).compile()
    obs = obs_batch(3, rgb=False)
    actions = {}
    for name, policy in (("eager", eager), ("compiled", compiled)):
        torch.manual_seed(5)
        actions[name] = policy.predict_action(obs)
        # with a generator the energy head runs eagerly, reproducibly
        actions[name + "-generator"] = policy.predict_action(obs, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(actions["compiled"], actions["eager"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(actions["compiled-generator"], actions["eager-generator"])
    assert compiled._compiled_predict is not None


def test_compile_leaves_the_energy_head_with_cameras_eager_and_says_so() -> None:
    policy = policy_with_head("energy", rgb=True)
    with pytest.warns(UserWarning, match="it has cameras; it stays eager"):
        policy.compile()
    assert policy.predict_action(obs_batch(2, rgb=True)).shape == (2, 8, 2)


@pytest.mark.parametrize("head", ["diffusion", "consistency"])
def test_compiled_predict_is_one_graph_without_recompiles(head: str) -> None:
    """Schedules are cached eagerly (Head.prepare_sampling), not while being traced: no graph break, no recompile."""
    from torch._dynamo.utils import counters

    policy = make_policy(head=head, rgb=False).compile()
    obs = obs_batch(2, rgb=False)
    counters.clear()
    for steps in (None, None, 3, 2, 2):  # None is the configured 3 steps: the same graph
        policy.predict_action(obs, steps=steps)
    assert counters["stats"]["unique_graphs"] == 2
    assert not counters["graph_break"]
