"""The demo's report folder: `report.md` (results table), `results.json`, `learning_curves.png`, `rollout.mp4`.

Everything is read back from the finished stages' records, so a resumed run writes the same report.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

from robopolicy.atomic import atomic_output, write_json
from robopolicy.pipeline.stages import StageRecord


def _csv_column(path: str, x: str, y: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get(y):
                xs.append(float(row[x]))
                ys.append(float(row[y]))
    return xs, ys


def plot_learning_curves(done: dict[str, StageRecord], path: Path) -> Path:
    """BC loss per head (left) and fine-tuning success per iteration (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bc_ax, ft_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, record in done.items():
        if name.startswith("bc_") and "log" in record:
            bc_ax.plot(*_csv_column(record["log"], "step", "loss"), label=name[3:])
        if name.startswith("finetune_") and record.get("log"):
            ft_ax.plot(*_csv_column(record["log"], "env_steps", "success_rate"), label=name[len("finetune_"):])
    bc_ax.set(title="behavior cloning", xlabel="step", ylabel="training loss", yscale="log")
    ft_ax.set(title="RL fine-tuning", xlabel="env steps", ylabel="rollout success rate", ylim=(-0.02, 1.02))
    for ax in (bc_ax, ft_ax):
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _pct(success: dict[str, Any] | None) -> str:
    if not success:
        return "-"
    low, high = success["ci95"]
    return f"{success['rate']:.0%} [{low:.0%}, {high:.0%}]"


def results_rows(done: dict[str, StageRecord]) -> list[dict[str, Any]]:
    """One row per behavior-cloned head: success before/after fine-tuning, latency, whether it was deployed."""
    deployed = done.get("deploy", {}).get("policy")
    rows = []
    for name in done:
        if not name.startswith("bc_"):
            continue
        head = name[3:]
        before = done.get(f"eval_bc_{head}", {})
        tuned = next((k[len("eval_"):] for k in done if k.startswith(f"eval_ft_{head}_")), None)
        after = done.get(f"eval_{tuned}", {}) if tuned else {}
        rows.append({"head": head, "algo": tuned.split("_")[-1] if tuned else None,
                     "success_bc": before.get("success"), "success_finetuned": after.get("success"),
                     "latency_ms_p50": (after or before).get("latency_ms_p50"),
                     "deployed": deployed if deployed in (name, tuned) else None})
    return rows


def _markdown(config: dict[str, Any], done: dict[str, StageRecord], rows: list[dict[str, Any]]) -> str:
    lines = ["# robopolicy demo report", "",
             f"Task `push_puck`: {done['collect']['episodes']} scripted demonstrations; every policy evaluated on "
             f"{config['eval_episodes']} held-out seeds (success with Wilson 95 % intervals).", "",
             "| head | fine-tuning | success after BC | success after fine-tuning | latency per chunk (p50) "
             "| deployed |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        latency = f"{r['latency_ms_p50']:.2f} ms" if r["latency_ms_p50"] is not None else "-"
        lines.append(f"| {r['head']} | {r['algo'] or '-'} | {_pct(r['success_bc'])} | "
                     f"{_pct(r['success_finetuned'])} | {latency} | {r['deployed'] or '-'} |")
    deploy = done.get("deploy")
    if deploy:
        lines += ["", f"Deployed `{deploy['policy']}` through executor and shield on the `mujoco` backend "
                      f"(`hardware/{deploy['hardware']}.toml`, sim-in-the-loop): "
                      f"{deploy['episodes']} episode(s), success {deploy['success_rate']:.0%}, "
                      f"shield interventions {deploy['interventions']} in {deploy['steps']} steps "
                      f"({deploy['interventions_per_step']:.3f} per step)."]
    walls = ", ".join(f"{k} {v.get('wall_s', 0):.0f}s" for k, v in done.items() if k != "report")
    lines += ["", "![learning curves](learning_curves.png)", "", f"Stage wall times: {walls}",
              "", "Files: `results.json` (every number), `learning_curves.png`, `rollout.mp4`, `runs/` (checkpoints, "
              "CSV and tensorboard logs), `eval/` (per-policy reports), `data/` (the demonstrations).", ""]
    return "\n".join(lines)


def write_report(out: Path, config: dict[str, Any], done: dict[str, StageRecord]) -> StageRecord:
    rows = results_rows(done)
    plot_learning_curves(done, out / "learning_curves.png")
    video = next((v for r in done.values() for v in r.get("videos", []) if str(v).endswith((".mp4", ".gif"))), None)
    if video:
        shutil.copyfile(video, out / f"rollout{Path(video).suffix}")
    write_json(out / "results.json", {"config": config, "results": rows, "stages": done}, indent=1)
    with atomic_output(out / "report.md", overwrite=True) as tmp:
        tmp.write_text(_markdown(config, done, rows))
    return {"report": str(out / "report.md"), "rows": len(rows), "video": video}
