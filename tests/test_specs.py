from pathlib import Path

import pytest

from robopolicy.specs import (
    ActionSpec,
    ConfigError,
    ObsSpec,
    PolicyConfig,
    RunConfig,
    apply_overrides,
    from_dict,
    load_run_config,
    to_dict,
)

RECIPE = """
[policy]
n_obs_steps = 2
horizon = 8
n_action_steps = 4
obs = [{key = "state", shape = [3]}, {key = "agentview", shape = [84, 84, 3], kind = "rgb"}]
action = {dim = 7}
[policy.head]
name = "flow"
params = {inference_steps = 4}
[train]
steps = 10
"""


def test_round_trip_through_dict() -> None:
    cfg = PolicyConfig(obs=[ObsSpec("state", (3,))], action=ActionSpec(2), horizon=8, n_action_steps=4)
    again = from_dict(PolicyConfig, to_dict(cfg))
    assert again == cfg


def test_toml_recipe_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(RECIPE)
    run = load_run_config(path, ["train.lr=3e-4", "policy.head.name=\"diffusion\"", "train.out_dir=out/x"])
    assert isinstance(run, RunConfig)
    assert run.train.lr == pytest.approx(3e-4)
    assert run.train.out_dir == "out/x"
    assert run.policy.head.name == "diffusion"
    assert run.policy.obs[1].shape == (84, 84, 3)
    assert run.policy.rgb_keys == ["agentview"] and run.policy.low_dim_keys == ["state"]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"obs": [{"key": "s", "shape": [3]}], "action": {"dim": 0}}, "action.dim"),
        ({"obs": [{"key": "s", "shape": [3]}], "action": {"dim": 2}, "n_action_steps": 20}, "policy.n_action_steps"),
        ({"obs": [{"key": "s", "shape": [3], "kind": "depth"}], "action": {"dim": 2}}, "obs[0].kind"),
        ({"obs": [{"key": "s", "shape": [3]}], "action": {"dim": 2}, "horizon": "8"}, "horizon"),
        ({"obs": [{"key": "s", "shape": [3]}], "action": {"dim": 2}, "hoizon": 8}, "hoizon"),
        ({"obs": [{"key": "cam", "shape": [84, 84], "kind": "rgb"}], "action": {"dim": 2}}, "obs[cam].shape"),
        ({"action": {"dim": 2}}, "obs"),
        ({"obs": [{"key": "s", "shape": [3]}], "action": {"dim": 2}, "horizon": 6, "n_action_steps": 2,
          "backbone": {"kind": "unet", "down_dims": [32, 64, 128]}}, "policy.horizon"),
        ({"obs": [{"key": "s", "shape": [3]}], "action": {"dim": 2},
          "backbone": {"kind": "residual_mlp", "hidden_dims": [64, 32]}}, "backbone.hidden_dims"),
    ],
)
def test_validation_errors_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        from_dict(PolicyConfig, data)


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[policy\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_run_config(path)
    with pytest.raises(ConfigError, match="missing.toml"):
        load_run_config(tmp_path / "missing.toml")


def test_override_must_be_key_value() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.lr"])
