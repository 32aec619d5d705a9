"""Fine-tuning's learner on torch.distributed (gloo, 2 CPU processes, launched by torchrun).

This file is also the worker script: torchrun runs it with the test's directory; each rank fine-tunes a tiny
push_puck DPPO policy (straight, then resumed from the first iteration's checkpoint) and writes its final
parameters and the env seeds and env steps of its own rollouts for the test to compare.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from robopolicy.checkpoint import load_train_state
from robopolicy.rl import finetune as finetune_module
from robopolicy.rl.collector import Collector
from robopolicy.rl.config import FinetuneConfig, load_finetune_config
from robopolicy.rl.finetune import TIMING_COLUMNS, check_world_size, finetune
from robopolicy.specs import ConfigError
from robopolicy.train import distributed
from robopolicy.train.runlog import read_log

ROOT = Path(__file__).resolve().parents[1]
N_ENVS, N_DECISIONS, ITERATIONS = 4, 4, 2  # global envs: 2 per rank


def config(out: Path, **sets: object) -> FinetuneConfig:
    overrides = [f"{k}={json.dumps(v)}" for k, v in sets.items()]
    return load_finetune_config(None, [
        f"iterations={ITERATIONS}", "ckpt_every=1", "tensorboard=false", "progress=false", f"rollout.n_envs={N_ENVS}",
        f"rollout.n_decisions={N_DECISIONS}", "update.epochs=3", "update.minibatch_size=8", "update.target_kl=3e-5",
        "eval.every=2", "eval.n_episodes=2", "eval.n_envs=2", "params.finetune_steps=3", *overrides],
        task="push_puck", out_dir=str(out))


def worker(tmp: Path) -> None:
    """Each rank: a straight run, then one resumed from the straight run's first checkpoint; saves the final
    parameters of both, what its collector ran (seeds, env steps) and the advantages it updated on."""
    torch.set_num_threads(1)
    info, _ = distributed.setup("cpu")
    assert info.world_size == 2 and info.owns_group
    ran: list[dict] = []
    collect = Collector.collect

    def recording(self: Collector, n_decisions: int, seeds: list[int]):
        rollout = collect(self, n_decisions, seeds)
        ran.append({"seeds": seeds, "env_steps": rollout.env_steps})
        return rollout

    update = finetune_module.ppo_update

    def recording_update(algorithm, critic, batch, *args):
        ran[-1]["advantages"] = batch.advantages.tolist()
        return update(algorithm, critic, batch, *args)

    Collector.collect = recording  # type: ignore[method-assign]
    finetune_module.ppo_update = recording_update  # type: ignore[assignment]
    try:
        for name, resume in (("straight", "never"), ("resumed", str(tmp / "straight/checkpoints/step_000001"))):
            ran.clear()
            result = finetune(config(tmp / name), str(tmp / "bc"), resume=resume)
            params = {k: p.detach().contiguous() for k, p in result.policy.named_parameters()}
            save_file(params, str(tmp / name / f"params_rank{info.rank}.safetensors"))
            (tmp / name / f"ran_rank{info.rank}.json").write_text(json.dumps(ran))
    finally:
        distributed.teardown(info)


def test_two_gloo_processes_share_the_update_and_resume_exactly(tmp_path: Path) -> None:
    from tests.test_rl_finetune import tiny_policy

    initial = tiny_policy()
    initial.save(tmp_path / "bc")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
           str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"

    # Both ranks end with the same weights, and they moved: every update averaged both ranks' gradients.
    ranks = [load_file(str(straight / f"params_rank{r}.safetensors")) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    start = {f"head.finetuned.{k[5:]}": v for k, v in initial.state_dict().items() if k.startswith("head.")}
    assert any(k in start and not torch.equal(start[k], ranks[0][k]) for k in ranks[0])

    # Each rank ran its own half of each iteration's env seeds (together: a 1-process run's seeds, 0..3, 4..7).
    ran = [json.loads((straight / f"ran_rank{r}.json").read_text()) for r in (0, 1)]
    for it in range(ITERATIONS):
        seeds = [ran[0][it]["seeds"], ran[1][it]["seeds"]]
        assert seeds == [[it * N_ENVS, it * N_ENVS + 1], [it * N_ENVS + 2, it * N_ENVS + 3]]
        # advantages were normalized over both ranks' decisions together, not over each rank's own
        own = [torch.tensor(ran[r][it]["advantages"], dtype=torch.float64) for r in (0, 1)]
        both = torch.cat(own)
        assert abs(float(both.mean())) < 1e-6 and float(both.std()) == pytest.approx(1.0, abs=1e-5)
        assert max(abs(float(a.mean())) for a in own) > 1e-3

    # Rank 0 alone logged, one row per iteration, with global numbers: env steps are the sum over ranks.
    rows = read_log(straight / "log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2]
    per_iteration = [ran[0][it]["env_steps"] + ran[1][it]["env_steps"] for it in range(ITERATIONS)]
    assert [int(r["env_steps"]) for r in rows] == [per_iteration[0], sum(per_iteration)]
    assert rows[-1]["eval_success"] is not None
    assert any(r["kl_stopped"] == 1.0 for r in rows)  # the stop, decided on the mean KL, did not hang a rank
    assert {p.name for p in (straight / "checkpoints").iterdir()} == {"best", "latest", "step_000001",
                                                                      "step_000002"}

    # The reward scaler took in both ranks' envs: one return per env and decision of every iteration.
    tensors, _ = load_train_state(straight / "checkpoints/latest")
    assert float(tensors["reward.returns.count"]) == pytest.approx(1e-4 + ITERATIONS * N_DECISIONS * N_ENVS)

    # Resumed from iteration 1 on both ranks, iteration 2 is logged and learned exactly as in the straight run.
    again = read_log(resumed / "log.csv")
    assert [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in again] == \
        [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows[1:]]
    for r in (0, 1):
        final = load_file(str(resumed / f"params_rank{r}.safetensors"))
        assert all(torch.equal(final[k], ranks[0][k]) for k in final)


def test_envs_and_minibatch_must_split_evenly_over_the_ranks(tmp_path: Path) -> None:
    two = distributed.Dist(rank=0, world_size=2)
    check_world_size(config(tmp_path), two)
    with pytest.raises(ConfigError, match=r"rollout.n_envs: expected a multiple of the world size 2.*got 3"):
        check_world_size(config(tmp_path, **{"rollout.n_envs": 3}), two)
    with pytest.raises(ConfigError, match=r"update.minibatch_size: .*world size 2.*got 5"):
        check_world_size(config(tmp_path, **{"update.minibatch_size": 5}), two)


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
