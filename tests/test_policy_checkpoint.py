"""Policy wiring (normalization, obs validation, closed-loop stepping) and checkpoint save/load."""

import json
from pathlib import Path

import pytest
import torch

from robopolicy.checkpoint import MODEL_FILE, CheckpointError, save_checkpoint
from robopolicy.policy import Policy
from robopolicy.specs import ActionSpec, BackboneConfig, EncoderConfig, HeadConfig, ObsSpec, PolicyConfig
from tests.conftest import tiny_stats

HEADS = ["diffusion", "flow"]


def tiny_config(head: str = "diffusion", rgb: bool = True, backbone: str = "mlp", share: bool = False) -> PolicyConfig:
    obs = [ObsSpec("state", (3,))]
    if rgb:
        obs += [ObsSpec("agentview", (40, 40, 3), "rgb"), ObsSpec("wrist", (40, 40, 3), "rgb")]
    return PolicyConfig(
        obs=obs, action=ActionSpec(2), n_obs_steps=2, horizon=8, n_action_steps=4,
        encoder=EncoderConfig(crop_shape=(36, 36), num_keypoints=8, rgb_feature_dim=16, share_rgb_weights=share),
        backbone=BackboneConfig(kind=backbone, hidden_dims=[32, 32], down_dims=[16, 32], n_groups=4,
                                time_embed_dim=16),
        head=HeadConfig(head, {"inference_steps": 3}),
    )


def make_policy(**kw) -> Policy:
    torch.manual_seed(0)
    policy = Policy(tiny_config(**kw))
    policy.fit_normalizer(tiny_stats({"state": 3}, 2))
    return policy


def obs_batch(b: int = 2, rgb: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    obs = {"state": torch.randn(b, 2, 3, generator=g)}
    if rgb:
        for k in ("agentview", "wrist"):
            obs[k] = torch.randint(0, 256, (b, 2, 40, 40, 3), generator=g, dtype=torch.uint8)
    return obs


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("backbone", ["mlp", "residual_mlp", "unet"])
@pytest.mark.parametrize("share", [False, True])
def test_save_load_gives_identical_actions(tmp_path: Path, head: str, backbone: str, share: bool) -> None:
    policy = make_policy(head=head, backbone=backbone, share=share).eval()
    obs = obs_batch()
    a = policy.predict_action(obs, generator=torch.Generator().manual_seed(7))
    assert a.shape == (2, 8, 2)
    policy.save(tmp_path / "ckpt")
    loaded = Policy.load(tmp_path / "ckpt")
    b = loaded.predict_action(obs, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["config.json", "model.safetensors"]
    assert not list(tmp_path.glob(".ckpt*")), "no temporary directories left behind"


def test_ema_weights_are_loaded_by_default(tmp_path: Path) -> None:
    policy = make_policy(rgb=False)
    ema = {name: torch.zeros_like(p) for name, p in policy.named_parameters()}
    policy.save(tmp_path / "ckpt", ema_state=ema)
    with_ema = Policy.load(tmp_path / "ckpt")
    raw = Policy.load(tmp_path / "ckpt", use_ema=False)
    assert all((p == 0).all() for p in with_ema.parameters())
    torch.testing.assert_close(dict(raw.named_parameters())["head.net.net.0.weight"],
                               dict(policy.named_parameters())["head.net.net.0.weight"])
    # the normalizer travels with the checkpoint
    torch.testing.assert_close(raw.normalizer.state_dict(), policy.normalizer.state_dict())


def test_overwrite_is_atomic_replacement(tmp_path: Path) -> None:
    policy = make_policy(rgb=False)
    policy.save(tmp_path / "ckpt")
    policy.save(tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_interrupted_write_leaves_no_partial_checkpoint(tmp_path: Path) -> None:
    policy = make_policy(rgb=False)

    class Boom(dict):
        def items(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path / "ckpt", policy, ema_state=Boom(x=torch.zeros(1)))
    assert list(tmp_path.iterdir()) == []


def test_loss_is_finite_and_backpropagates() -> None:
    policy = make_policy(backbone="unet")
    batch = {"obs": obs_batch(4), "action": torch.randn(4, 8, 2)}
    loss = policy(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert policy.encoder.cameras["wrist"].trunk.stem[0].weight.grad.abs().sum() > 0


def test_normalization_is_inside_the_policy() -> None:
    """Actions come out in data units: a chunk is unnormalized with the fitted action statistics."""
    policy = make_policy(rgb=False).eval()
    chunk = policy.predict_action(obs_batch(64, rgb=False))
    # normalized samples are clipped to [-1, 1] by the diffusion head -> data range is [-1, 2] x [-2, 4]
    assert chunk[..., 0].min() >= -1 - 1e-4 and chunk[..., 0].max() <= 2 + 1e-4
    assert chunk[..., 1].min() >= -2 - 1e-4 and chunk[..., 1].max() <= 4 + 1e-4


def test_select_action_replans_every_n_action_steps() -> None:
    policy = make_policy(rgb=False).eval()
    plans = []
    original = policy.act
    policy.act = lambda cond, **kw: plans.append(cond) or original(cond, **kw)  # type: ignore[method-assign]
    policy.reset()
    frames = [torch.randn(3, 3) for _ in range(9)]
    for frame in frames:
        action = policy.select_action({"state": frame})
        assert action.shape == (3, 2)
    assert len(plans) == 3  # steps 0, 4, 8
    # each plan conditions on exactly what predict_action would see for the same history
    # (at episode start the first observation is repeated)
    for cond, history in zip(plans, [[0, 0], [3, 4], [7, 8]]):
        expected = policy.encode({"state": torch.stack([frames[i] for i in history], 1)})
        torch.testing.assert_close(cond, expected)
    policy.reset()
    assert policy._planned.remaining(0) == 0 and not policy._frame_features.frames


def test_frames_encode_independently_and_act_matches_predict_action() -> None:
    """encode = per-frame features concatenated; act(encode(obs)) is predict_action(obs)."""
    policy = make_policy().eval()
    obs = obs_batch(3)
    frames = policy.encode_frames(obs)
    assert frames.shape[:2] == (3, 2)
    torch.testing.assert_close(frames.flatten(1), policy.encode(obs))
    second = policy.encode_frames({k: v[:, 1:] for k, v in obs.items()})
    torch.testing.assert_close(second[:, 0], frames[:, 1], atol=1e-5, rtol=1e-5)
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    torch.testing.assert_close(policy.act(policy.encode(obs), generator=g()), policy.predict_action(obs, generator=g()))
    with pytest.raises(ValueError, match="expected shape"):
        policy.encode({k: v[:, 1:] for k, v in obs.items()})  # one frame where the policy needs two


def test_select_action_encodes_each_frame_once_and_only_when_used() -> None:
    """With 2 observation frames and 4 executed actions, a plan needs the frame before it and its own."""
    policy = make_policy().eval()
    encoded = []
    original = policy.encode_frames
    policy.encode_frames = lambda obs: encoded.append(1) or original(obs)  # type: ignore[method-assign]
    batch = obs_batch(3)
    for _ in range(9):
        policy.select_action({k: v[:, 0] for k, v in batch.items()})
    assert len(encoded) == 5  # steps 0, 3, 4, 7, 8: one image encoding per frame, none for frames never used


def test_tiny_camera_images_are_rejected() -> None:
    cfg = tiny_config()
    cfg.encoder.crop_shape = (20, 20)
    with pytest.raises(ValueError, match="at least 33 px"):
        Policy(cfg)


def test_observation_errors_name_key_and_shape() -> None:
    policy = make_policy()
    obs = obs_batch()
    with pytest.raises(KeyError, match="wrist"):
        policy.predict_action({k: v for k, v in obs.items() if k != "wrist"})
    obs["state"] = torch.randn(2, 2, 4)
    with pytest.raises(ValueError, match=r"'state'.*\(B, 2, 3\)"):
        policy.predict_action(obs)


def test_corrupt_or_unknown_checkpoints_name_file_and_field(tmp_path: Path) -> None:
    policy = make_policy(rgb=False)
    ckpt = policy.save(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="config.json: not found"):
        Policy.load(tmp_path / "nothing")
    config = json.loads((ckpt / "config.json").read_text())

    def write(cfg: dict) -> None:
        (ckpt / "config.json").write_text(json.dumps(cfg))

    write({**config, "format": "something-else"})
    with pytest.raises(CheckpointError, match="field 'format'"):
        Policy.load(ckpt)
    write({**config, "format_version": 99})
    with pytest.raises(CheckpointError, match="format_version"):
        Policy.load(ckpt)
    bad = json.loads(json.dumps(config))
    bad["policy"]["horizon"] = -1
    write(bad)
    with pytest.raises(CheckpointError, match="config.json: .*horizon"):
        Policy.load(ckpt)
    write(config)
    (ckpt / MODEL_FILE).write_bytes((ckpt / MODEL_FILE).read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors: unreadable or corrupt"):
        Policy.load(ckpt)
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        Policy.load(ckpt)


def test_mismatched_tensors_are_reported(tmp_path: Path) -> None:
    policy = make_policy(rgb=False)
    ckpt = policy.save(tmp_path / "ckpt")
    config = json.loads((ckpt / "config.json").read_text())
    config["policy"]["backbone"]["hidden_dims"] = [64, 64]
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="has shape"):
        Policy.load(ckpt)


def test_core_does_not_import_simulators() -> None:
    import subprocess
    import sys

    code = ("import sys, robopolicy.policy, robopolicy.checkpoint; "
            "bad = [m for m in ('mujoco', 'robosuite', 'gymnasium') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
