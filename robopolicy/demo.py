"""The work behind `robopolicy demo` (see `demo_cli`): train each head on the toy task, sample, time, plot."""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

import torch

from robopolicy.atomic import write_json
from robopolicy.policy import Policy
from robopolicy.specs import RunConfig, TrainConfig
from robopolicy.train.toy import TOY_RECIPES, BimodalToyDataset, mode_coverage, toy_policy_config
from robopolicy.train.trainer import train

HEADS = tuple(TOY_RECIPES)


def measure_latency(policy: Policy, repeats: int = 30) -> float:
    """Median seconds for one batch-1 chunk prediction (observation in, unnormalized chunk out)."""
    obs = {"state": torch.zeros(1, policy.config.n_obs_steps, 2)}
    for _ in range(3):
        policy.predict_action(obs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        policy.predict_action(obs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def evaluate(policy: Policy, samples: int, seed: int) -> tuple[torch.Tensor, dict[str, float]]:
    g = torch.Generator().manual_seed(seed)
    obs = {"state": torch.rand(samples, policy.config.n_obs_steps, 2, generator=g) * 2 - 1}
    chunks = policy.predict_action(obs, generator=g)
    return chunks, mode_coverage(chunks)


def plot(chunks: dict[str, torch.Tensor], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(chunks), figsize=(3.2 * len(chunks), 3.0), sharey=True, squeeze=False)
    for ax, (head, chunk) in zip(axes[0], chunks.items()):
        ax.hist(chunk.flatten(1).mean(1).numpy(), bins=60, range=(-1.6, 1.6), color="tab:blue")
        ax.axvspan(-0.5, 0.5, color="tab:red", alpha=0.08, label="between modes")
        ax.set_title(head)
        ax.set_xlabel("mean of sampled action chunk")
    axes[0][0].set_ylabel("samples")
    axes[0][0].legend(loc="upper center", fontsize=7)
    fig.suptitle("Toy task: demonstrations are +1 or -1 with equal probability")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(out: Path, heads: list[str], steps: int | None, samples: int, seed: int, progress: bool) -> list[dict]:
    """Train, sample and time each head; `steps` overrides the per-head step counts of TOY_RECIPES."""
    out.mkdir(parents=True, exist_ok=True)
    dataset = BimodalToyDataset(seed=seed)
    rows, chunks = [], {}
    for head in heads:
        run_dir = out / "runs" / head
        shutil.rmtree(run_dir, ignore_errors=True)
        head_steps, params = TOY_RECIPES[head]
        head_steps = steps or head_steps
        run = RunConfig(
            policy=toy_policy_config(head, head_params=params),
            train=TrainConfig(dataset="toy:bimodal", out_dir=str(run_dir), steps=head_steps, batch_size=256, lr=1e-3,
                              warmup_steps=head_steps // 10, seed=seed, log_every=max(1, head_steps // 20),
                              val_every=head_steps, ckpt_every=head_steps, tensorboard=True, progress=progress),
        )
        start = time.perf_counter()
        result = train(run, resume="never", dataset=dataset)
        train_s = time.perf_counter() - start
        policy = Policy.load(result.checkpoints / "latest")
        chunks[head], coverage = evaluate(policy, samples, seed)
        rows.append({"head": head, "steps": result.step, "sample_steps": policy.head.default_chain_steps(),
                     "loss": result.final_loss, "train_s": train_s,
                     **coverage, "latency_ms": 1e3 * measure_latency(policy),
                     "checkpoint": str(result.checkpoints / "latest")})
    write_json(out / "results.json", rows)
    plot(chunks, out / "action_distributions.png")
    return rows


def format_table(rows: list[dict]) -> str:
    header = (f"{'head':<12} {'steps':>6} {'sampling':>8} {'loss':>8} {'+1 mode':>8} {'-1 mode':>8} {'between':>8} "
              f"{'latency':>9} {'train':>7}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['head']:<12} {r['steps']:>6} {r['sample_steps']:>8} {r['loss']:>8.4f} "
                     f"{r['plus']:>8.1%} {r['minus']:>8.1%} "
                     f"{r['between']:>8.1%} {r['latency_ms']:>7.2f}ms {r['train_s']:>6.0f}s")
    return "\n".join(lines)
