"""Multi-process BC training with torch.distributed (gloo, 2 CPU processes, launched by torchrun).

This file is also the worker script: torchrun runs it with an output directory, each rank trains and
then writes its final parameters to `params_rank{r}.safetensors` for the test to compare.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from robopolicy.specs import RunConfig, TrainConfig
from robopolicy.train import distributed
from robopolicy.train.runlog import read_log
from robopolicy.train.toy import toy_policy_config
from robopolicy.train.trainer import seed_everything, train

STEPS = 8


def run_config(out: Path) -> RunConfig:
    # No EMA, so the compared parameters are the optimised weights themselves.
    return RunConfig(toy_policy_config("diffusion", hidden_dims=[64, 64]),
                     TrainConfig(out_dir=str(out), steps=STEPS, batch_size=32, lr=1e-3, warmup_steps=2, log_every=1,
                                 val_every=4, ckpt_every=4, use_ema=False, progress=False, tensorboard=False))


def worker(out: Path) -> None:
    """Each rank: a straight run, then a run resumed from its halfway checkpoint; saves both final parameters.

    The process group is joined once, by the same `setup` that `train` uses on its own, and both runs
    reuse it (torchrun's store does not support joining twice in one process reliably).
    """
    info, _ = distributed.setup("cpu")
    assert info.world_size == 2 and info.owns_group
    try:
        for name, resume in (("straight", "never"), ("resumed", str(out / "straight/checkpoints/step_000004"))):
            result = train(run_config(out / name), resume=resume)
            params = {k: p.detach().contiguous() for k, p in result.policy.named_parameters()}
            save_file(params, str(out / name / f"params_rank{info.rank}.safetensors"))
    finally:
        distributed.teardown(info)


def test_two_gloo_processes_keep_identical_parameters_and_resume_exactly(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__, str(tmp_path)]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    ranks = [load_file(str(straight / f"params_rank{r}.safetensors")) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])

    # Training moved the weights away from the (seeded, shared) initialisation, rebuilt as the trainer seeds it.
    seed_everything(run_config(straight).train.seed)
    from robopolicy.policy import Policy
    init = dict(Policy(run_config(straight).policy).named_parameters())
    assert any(not torch.equal(init[k], ranks[0][k]) for k in ranks[0])

    # Only rank 0 wrote logs and checkpoints: one row per step, no duplicates.
    assert [int(r["step"]) for r in read_log(straight / "log.csv")] == list(range(1, STEPS + 1))
    assert {p.name for p in (straight / "checkpoints").iterdir()} == {"best", "latest", "step_000004", "step_000008"}

    # The 2-process run resumed halfway logs the same losses and ends with the same weights.
    reference = {int(r["step"]): r["loss"] for r in read_log(straight / "log.csv")}
    assert {int(r["step"]): r["loss"] for r in read_log(resumed / "log.csv")} == \
        {s: reference[s] for s in range(5, STEPS + 1)}
    final = load_file(str(resumed / "params_rank0.safetensors"))
    assert all(torch.equal(final[k], ranks[0][k]) for k in final)


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
