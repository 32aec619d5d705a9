"""Policy.compile(ahead_of_time=True): AOTInductor snapshots give the eager actions, are cached by weights and are
dropped (with a warning) as soon as the weights they were compiled from change."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

import robopolicy.aot
from robopolicy.policy import Policy
from tests.test_policy_checkpoint import make_policy, obs_batch
from tests.test_policy_compile import policy_with_head

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="AOTInductor's CPU backend needs a C++ compiler")


def _seeded(policy: Policy, seed: int, **kwargs) -> torch.Tensor:
    torch.manual_seed(seed)
    return policy.predict_action(obs_batch(3, rgb=False), **kwargs)


@pytest.mark.parametrize("head,params", [("diffusion", {"sampler": "ddpm", "inference_steps": 3}),
                                         ("consistency", {"inference_steps": 2}), ("regression", {})])
def test_aot_predict_matches_eager(tmp_path: Path, head: str, params: dict) -> None:
    """DDPM draws fresh noise at every step: all of it comes from the same draw as eager sampling's."""
    eager = policy_with_head(head, params).eval()
    aot = policy_with_head(head, params).compile(ahead_of_time=True, cache_dir=tmp_path)
    torch.testing.assert_close(_seeded(aot, 1), _seeded(eager, 1), atol=1e-5, rtol=1e-4)
    obs = obs_batch(3, rgb=False)
    torch.testing.assert_close(aot.predict_action(obs, generator=torch.Generator().manual_seed(2)),
                               eager.predict_action(obs, generator=torch.Generator().manual_seed(2)),
                               atol=1e-5, rtol=1e-4)
    assert len(list(tmp_path.glob("PredictFromNoise-b3-*.pt2"))) == 1


def test_aot_flow_policy_per_step_count_fresh_outputs_and_numpy_input(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="robopolicy")
    eager = make_policy(head="flow", rgb=False).eval()
    aot = make_policy(head="flow", rgb=False).compile(ahead_of_time=True, cache_dir=tmp_path)
    for steps in (None, 1):
        torch.testing.assert_close(_seeded(aot, 4, steps=steps), _seeded(eager, 4, steps=steps), atol=1e-5, rtol=1e-4)
    first = _seeded(aot, 5)
    kept = first.clone()
    assert not torch.equal(_seeded(aot, 6), kept)
    torch.testing.assert_close(first, kept, rtol=0, atol=0)  # a later call does not overwrite an earlier output
    numpy_obs = {k: v.numpy().astype("float64") for k, v in obs_batch(3, rgb=False).items()}
    torch.manual_seed(5)
    torch.testing.assert_close(aot.predict_action(numpy_obs), kept, atol=1e-5, rtol=1e-4)
    assert sorted(p.name.split("-")[2] for p in tmp_path.glob("*.pt2")) == ["s1", "s3"]
    assert caplog.text.count("compiling ") == 2 and caplog.text.count("compiled PredictFromNoise-b3-") == 2


def test_aot_rejects_bad_observations_like_eager(tmp_path: Path) -> None:
    aot = make_policy(head="flow", rgb=False).compile(ahead_of_time=True, cache_dir=tmp_path)
    with pytest.raises(KeyError, match="missing key 'state'"):
        aot.predict_action({"joints": torch.zeros(2, 2, 3)})
    with pytest.raises(ValueError, match=r"'state': expected shape \(B, 2, 3\)"):
        aot.predict_action({"state": torch.zeros(2, 2, 4)})


def test_aot_packages_are_reused_for_the_same_weights_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restarted process loads what an earlier one compiled; other weights or an unloadable file compile anew."""
    expected = _seeded(make_policy(head="flow", rgb=False).compile(ahead_of_time=True, cache_dir=tmp_path), 3)
    recompiled: list[Path] = []

    def fake_compile(module, inputs, path):
        recompiled.append(Path(path))
        return lambda *tensors: torch.zeros(3, 8, 2)

    monkeypatch.setattr(robopolicy.aot, "compile_function", fake_compile)
    restarted = make_policy(head="flow", rgb=False).compile(ahead_of_time=True, cache_dir=tmp_path)
    torch.testing.assert_close(_seeded(restarted, 3), expected, rtol=0, atol=0)
    assert not recompiled
    other_weights = make_policy(head="flow", rgb=False)
    with torch.no_grad():
        next(other_weights.head.parameters()).add_(1.0)
    _seeded(other_weights.compile(ahead_of_time=True, cache_dir=tmp_path), 3)
    (package,) = tmp_path.glob("*.pt2")
    assert recompiled and recompiled[0].parent == tmp_path and recompiled[0] != package

    package.write_bytes(package.read_bytes()[:1000])  # truncated, as by a full disk
    with pytest.warns(UserWarning, match=f"{package.name}: cannot load this AOTInductor package"):
        _seeded(make_policy(head="flow", rgb=False).compile(ahead_of_time=True, cache_dir=tmp_path), 0)
    assert recompiled[1:] == [package]


def test_changed_weights_drop_the_snapshot_with_a_warning(tmp_path: Path) -> None:
    eager = make_policy(head="flow", rgb=False).eval()
    aot = make_policy(head="flow", rgb=False).compile(ahead_of_time=True, cache_dir=tmp_path)
    _seeded(aot, 0)
    state = {k: v * 0.5 for k, v in eager.state_dict().items()}
    for policy in (eager, aot):
        policy.load_state_dict(state)
    with pytest.warns(UserWarning, match="weights changed since compile"):
        got = _seeded(aot, 7)
    torch.testing.assert_close(got, _seeded(eager, 7))  # the new weights, eagerly
    with pytest.warns(UserWarning, match="moved or converted"):
        make_policy(head="flow", rgb=False).compile(ahead_of_time=True, cache_dir=tmp_path).double()


def test_aot_camera_policy_compiles_sampling_and_closed_loop_matches_eager(tmp_path: Path) -> None:
    eager = make_policy(head="flow", rgb=True).eval()
    aot = make_policy(head="flow", rgb=True).compile(ahead_of_time=True, cache_dir=tmp_path)
    obs = obs_batch(2, rgb=True)
    torch.testing.assert_close(aot.predict_action(obs, generator=torch.Generator().manual_seed(2)),
                               eager.predict_action(obs, generator=torch.Generator().manual_seed(2)),
                               atol=1e-5, rtol=1e-4)
    actions = {}
    for name, policy in (("eager", eager), ("aot", aot)):
        policy.reset()
        torch.manual_seed(7)
        actions[name] = torch.stack([policy.select_action({k: v[:, 0] for k, v in obs.items()}) for _ in range(5)])
    torch.testing.assert_close(actions["aot"], actions["eager"], atol=1e-5, rtol=1e-4)
    assert [p.name.split("-")[0] for p in tmp_path.glob("*.pt2")] == ["ActFromNoise"]


def test_a_failed_compilation_names_the_package_and_leaves_no_file(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def no_compiler(exported, package_path):
        Path(package_path).write_bytes(b"half a package")
        raise FileNotFoundError("g++")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", no_compiler)
    policy = make_policy(head="flow", rgb=False).compile(ahead_of_time=True, cache_dir=tmp_path)
    with pytest.raises(RuntimeError, match=r"PredictFromNoise-b3-s3-\w+\.pt2: ahead-of-time compilation failed "
                                           r"\(FileNotFoundError: g\+\+\)"):
        _seeded(policy, 0)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("head", "params"), [("energy", {"variant": "ebt", "inference": "descent"}),
                                              ("energy_diffusion", {"num_train_timesteps": 20, "inference_steps": 2})])
def test_energy_heads_fall_back_to_torch_compile_and_say_so(tmp_path: Path, head: str, params: dict) -> None:
    policy = policy_with_head(head, params)
    with pytest.warns(UserWarning, match="torch.export cannot capture"):
        policy.compile(ahead_of_time=True, cache_dir=tmp_path)
    assert policy._snapshot is None and policy._compiled_predict is not None


def test_unet_heads_compile_one_network_call_for_every_step_count_and_train_eagerly(tmp_path: Path) -> None:
    """An unrolled multi-step UNet would compile for many minutes: the UNet is compiled once, the loop stays Python."""
    eager = make_policy(head="diffusion", rgb=False, backbone="unet").eval()
    aot = make_policy(head="diffusion", rgb=False, backbone="unet").compile(ahead_of_time=True, cache_dir=tmp_path)
    for steps in (None, 2):
        torch.testing.assert_close(_seeded(aot, 1, steps=steps), _seeded(eager, 1, steps=steps), atol=1e-5, rtol=1e-4)
    assert [p.name.split("-")[:2] for p in tmp_path.glob("*.pt2")] == [["NetworkForward", "b3"]]
    assert "forward" not in vars(aot.head.net)  # the package stands in for the network only while sampling
    loss = aot.train().loss({"obs": obs_batch(3, rgb=False), "action": torch.randn(3, 8, 2)})
    loss.backward()
    assert all(p.grad is not None for p in aot.head.net.parameters())
