"""One fine-tuning iteration runs end to end (rollout, GAE, PPO update, evaluation, checkpoint that
`Policy.load` reads and deploys) for every head: diffusion (dppo), flow (fpo, reinflow), consistency
(reinflow), energy (fpo on its likelihood surrogate) and the diffusion-trained energy (dppo and reinflow
through its chain)."""

import json
import math

import numpy as np
import pytest
import torch

from robopolicy.policy import Policy
from robopolicy.rl.config import FinetuneConfig, load_finetune_config
from robopolicy.rl.finetune import Finetuner, finetune
from robopolicy.specs import ActionSpec, BackboneConfig, HeadConfig, ObsSpec, PolicyConfig
from robopolicy.train.runlog import read_log

ARENA = np.full(6, 0.25)
CASES = [("diffusion", {"inference_steps": 3}, "dppo", {"finetune_steps": 2}),
         ("flow", {"inference_steps": 2}, "fpo", {"n_samples": 4}),
         ("flow", {"inference_steps": 2, "integrator": "midpoint"}, "fpo", {"ratio": "mean", "steps": 3}),
         ("flow", {"inference_steps": 2}, "reinflow", {}),
         ("consistency", {"inference_steps": 1}, "reinflow", {"noise_lr_scale": 10.0}),
         ("energy", {"langevin_steps": 4}, "fpo", {"n_negatives": 8}),
         ("energy_diffusion", {"inference_steps": 3, "num_train_timesteps": 20}, "dppo", {"finetune_steps": 2}),
         ("energy_diffusion", {"inference_steps": 2, "num_train_timesteps": 20}, "reinflow", {})]


def tiny_checkpoint(tmp_path, head: str, params: dict) -> str:
    torch.manual_seed(0)
    config = PolicyConfig(obs=[ObsSpec("state", (6,))], action=ActionSpec(2), n_obs_steps=2, horizon=4,
                          n_action_steps=4, backbone=BackboneConfig(kind="mlp", hidden_dims=[32, 32]),
                          head=HeadConfig(head, params))
    policy = Policy(config)
    low = np.full(2, -0.25)
    policy.fit_normalizer({"state": {"min": -ARENA, "max": ARENA, "mean": 0 * ARENA, "std": ARENA},
                           "action": {"min": low, "max": -low, "mean": 0 * low, "std": -low}})
    return str(policy.save(tmp_path / "bc"))


def one_iteration_config(tmp_path, algo: str, params: dict, *sets: str) -> FinetuneConfig:
    """Every setting a 1-iteration run needs to be quick, then `params` and any further overrides."""
    sets = ("iterations=1", "tensorboard=false", "progress=false", "rollout.n_envs=2", "rollout.n_decisions=3",
            "update.epochs=1", "update.minibatch_size=8", "eval.n_episodes=2", "eval.n_envs=2",
            *[f"params.{k}={json.dumps(v)}" for k, v in params.items()], *sets)
    return load_finetune_config(None, list(sets), task="push_puck", algo=algo, out_dir=str(tmp_path / "run"))


@pytest.mark.parametrize(("head", "head_params", "algo", "params"), CASES,
                         ids=[f"{c[2]}-{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_one_iteration_runs_and_deploys(tmp_path, head: str, head_params: dict, algo: str, params: dict) -> None:
    result = finetune(one_iteration_config(tmp_path, algo, params), tiny_checkpoint(tmp_path, head, head_params))
    row = read_log(tmp_path / "run" / "log.csv")[0]
    assert row["env_steps"] > 0 and math.isfinite(row["policy_loss"]) and row["eval_success"] is not None
    deployed = Policy.load(result.checkpoints / "latest")
    chunk = deployed.predict_action({"state": torch.zeros(3, 2, 6)})
    assert chunk.shape == (3, 4, 2) and torch.isfinite(chunk).all()


def test_the_noise_network_learns_at_its_multiple_of_the_actor_rate(tmp_path) -> None:
    config = one_iteration_config(tmp_path, "reinflow", {"noise_lr_scale": 10.0}, "update.actor_lr=1e-4")
    finetuner = Finetuner(config, tiny_checkpoint(tmp_path, "consistency", {"inference_steps": 1}))
    finetuner.fit()
    head_group, noise_group = finetuner.actor_opt.param_groups
    assert (head_group["lr"], noise_group["lr"]) == pytest.approx((1e-4, 1e-3))
    noise = {id(p) for p in finetuner.algorithm.policy.head.noise.parameters()}
    assert {id(p) for p in noise_group["params"]} == noise
    assert {id(p) for p in head_group["params"]} | noise == {id(p) for p in finetuner.algorithm.parameters()}
