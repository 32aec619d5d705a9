"""The one-page PNG summary of an evaluation: success per policy seed, returns, lengths, latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_summary(result: dict[str, Any], path: str | Path, title: str) -> Path:
    """Four panels from an :func:`robopolicy.eval.protocol.evaluate` result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episodes = result["episodes"]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    ax = axes[0]
    if "success" in result:
        per_seed = result["success"]["per_policy_seed"]
        ax.bar(list(per_seed), list(per_seed.values()), color="tab:green")
        rate, (low, high) = result["success"]["rate"], result["success"]["ci95"]
        ax.axhline(rate, color="k", lw=1)
        ax.axhspan(low, high, color="k", alpha=0.15)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"success {rate:.1%} [{low:.1%}, {high:.1%}]")
        ax.set_xlabel("policy seed")
    else:
        ax.text(0.5, 0.5, "no success rule", ha="center", va="center")
        ax.set_axis_off()
    axes[1].hist([e["ret"] for e in episodes], bins=20, color="tab:blue")
    axes[1].set_title(f"return, mean {result['return']['mean']:.2f}")
    axes[2].hist([e["length"] for e in episodes], bins=20, color="tab:orange")
    axes[2].set_title(f"episode length, mean {result['length']['mean']:.1f}")
    lat = result["latency_ms"]
    axes[3].bar(["mean", "p50", "p95"], [lat["per_call_mean"], lat["per_call_p50"], lat["per_call_p95"]])
    axes[3].set_title(f"inference ms per call (batch {lat['batch_size']})")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_learning_curves(curves: dict[str, tuple[list[float], list[float]]], path: str | Path, title: str,
                         xlabel: str = "env steps", ylabel: str = "held-out success rate") -> Path:
    """One panel with one line per run: {label: (x, y)} (e.g. fine-tuning evaluations against env steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (x, y) in curves.items():
        ax.plot(x, y, marker="o", ms=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
