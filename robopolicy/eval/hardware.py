"""The evaluation protocol on a robot: policy seeds x episodes, each run by the executor through the shield, with
the same ``result.json`` keys and ``summary.png`` as in simulation (:func:`robopolicy.eval.protocol.evaluate`).

An :class:`Operator` stands in for what a simulator does by itself: it resets the scene before each episode and
labels success after it. :class:`ConsoleOperator` asks a person at the terminal; :class:`SceneOperator` resets a
simulated task scene (``mujoco`` backend with ``task``) to its seed and reads success from the simulator, so a
sim-in-the-loop evaluation runs unattended; :class:`NoLabels` resets nothing and labels nothing (the report then
has no success rate, like a task without a success rule). A run that ends in a fault or an e-stop ends the
evaluation: the episodes so far are reported, with ``aborted`` saying why.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from robopolicy.atomic import write_json
from robopolicy.eval.plots import plot_summary
from robopolicy.eval.protocol import Episode, EvalConfig
from robopolicy.eval.stats import summarize, wilson_interval

FATAL = ("fault", "estop", "policy_error")


class Operator(Protocol):
    labels_success: bool

    def reset(self, robot, episode: int, seed: int) -> None: ...

    def success(self, robot, episode: int) -> bool: ...

    def step(self, robot, step: int) -> tuple[float, bool]:
        """(reward, episode over) after each control step."""
        ...


class ConsoleOperator:
    """A person resets the scene and says whether the episode succeeded."""

    labels_success = True

    def __init__(self, stdin=None, stdout=None) -> None:
        self.stdin, self.stdout = stdin or sys.stdin, stdout or sys.stdout

    def _ask(self, prompt: str) -> str:
        print(prompt, end="", file=self.stdout, flush=True)
        line = self.stdin.readline()
        if not line:
            raise EOFError("operator input closed")
        return line.strip().lower()

    def reset(self, robot, episode: int, seed: int) -> None:
        self._ask(f"episode {episode} (initial condition {seed}): reset the scene, then press Enter ")

    def success(self, robot, episode: int) -> bool:
        while True:
            answer = self._ask(f"episode {episode}: success? [y/n] ")
            if answer in ("y", "yes", "n", "no"):
                return answer.startswith("y")

    def step(self, robot, step: int) -> tuple[float, bool]:
        return 0.0, False


class SceneOperator:
    """A simulated task scene: reset to the seed's initial condition, reward and success from the simulator."""

    labels_success = True

    def __init__(self) -> None:
        self._success = False

    def _scene(self, robot):
        backend = robot.backend
        return getattr(backend, "inner", backend)

    def reset(self, robot, episode: int, seed: int) -> None:
        self._success = False
        self._scene(robot).reset_scene(seed)

    def step(self, robot, step: int) -> tuple[float, bool]:
        last = self._scene(robot).last_step
        self._success |= bool((last.info or {}).get("is_success", False))
        return last.reward, last.terminated or last.truncated

    def success(self, robot, episode: int) -> bool:
        return self._success


class NoLabels:
    labels_success = False

    def reset(self, robot, episode: int, seed: int) -> None:
        pass

    def success(self, robot, episode: int) -> bool:
        return False

    def step(self, robot, step: int) -> tuple[float, bool]:
        return 0.0, False


def run_hardware_episodes(robot, infer, executor_config, config: EvalConfig, operator: Operator,
                          recorder=None) -> dict[str, Any]:
    """Every (policy seed, initial condition) as one executor run; stops at the first fatal run."""
    from robopolicy.hal.executor import Executor

    episodes: list[Episode] = []
    runs: list[dict[str, Any]] = []
    latencies: list[float] = []
    aborted = ""
    index, total = 0, len(config.policy_seeds) * len(config.env_seeds)
    for policy_seed in config.policy_seeds:
        for env_seed in config.env_seeds:
            if robot.backend.state.value == "connected":
                robot.backend.arm()  # the previous episode ended disarmed
            operator.reset(robot, index, env_seed)
            torch.manual_seed(policy_seed)
            ret = [0.0]

            def until(step: int, obs, ret=ret) -> bool:
                reward, over = operator.step(robot, step)
                ret[0] += reward
                return over

            report = Executor(robot, infer, executor_config, recorder=recorder).run(until)
            latencies += report.inference_ms
            summary = report.summary()
            runs.append({k: summary[k] for k in ("reason", "detail", "steps", "overruns", "jitter_ms",
                                                  "obs_to_command_ms", "shield", "held")})
            success = operator.success(robot, index) if report.reason not in FATAL else False
            episodes.append(Episode(policy_seed, env_seed, success, ret[0], report.steps))
            index += 1
            print(episode_line(index, total, episodes[-1], summary, operator.labels_success), file=sys.stderr,
                  flush=True)
            if report.reason in FATAL:
                aborted = f"episode {index - 1}: {report.reason}: {report.detail}"
                break
        if aborted:
            break
    return {"episodes": episodes, "runs": runs, "latencies_ms": latencies, "aborted": aborted}


def episode_line(index: int, total: int, episode: Episode, summary: dict[str, Any], labelled: bool) -> str:
    """The progress line printed after each episode (one line, so it reads between an operator's prompts)."""
    shield = summary.get("shield") or {}
    outcome = ("success" if episode.success else "failure") if labelled else "unlabelled"
    return (f"episode {index}/{total} (policy seed {episode.policy_seed}, env seed {episode.env_seed}): {outcome}, "
            f"{episode.length} steps, return {episode.ret:.2f}, ended by {summary['reason']}, shield "
            f"{shield.get('intervened', 0)}/{shield.get('steps', 0)} steps corrected")


def hardware_result(out: dict[str, Any], config: EvalConfig, has_success: bool) -> dict[str, Any]:
    """The same keys as the simulation report, plus per-run executor and shield numbers."""
    episodes: list[Episode] = out["episodes"]
    lat = np.asarray(out["latencies_ms"][1:] or out["latencies_ms"] or [float("nan")])
    from robopolicy.hal.shield_env import sum_counts  # not at import: it loads mujoco before the GL backend is chosen

    shield_totals = sum_counts(run["shield"] for run in out["runs"])
    result: dict[str, Any] = {
        "config": asdict(config),
        "n_episodes": len(episodes),
        "return": summarize(np.array([e.ret for e in episodes] or [0.0])),
        "length": summarize(np.array([e.length for e in episodes] or [0])),
        "latency_ms": {"per_call_mean": float(lat.mean()), "per_call_p50": float(np.median(lat)),
                       "per_call_p95": float(np.quantile(lat, 0.95)),
                       "first_call": float(out["latencies_ms"][0]) if out["latencies_ms"] else float("nan"),
                       "batch_size": 1, "n_calls": len(out["latencies_ms"])},
        "episodes": [asdict(e) for e in episodes],
        "runs": out["runs"],
        "shield": shield_totals,
        "aborted": out["aborted"],
    }
    if has_success and episodes:
        successes = np.array([e.success for e in episodes])
        low, high = wilson_interval(int(successes.sum()), len(successes))
        seeds = sorted({e.policy_seed for e in episodes})
        per_seed = {str(s): float(np.mean([e.success for e in episodes if e.policy_seed == s])) for s in seeds}
        result["success"] = {"rate": float(successes.mean()), "ci95": [low, high], "per_policy_seed": per_seed}
    return result


def evaluate_on_hardware(checkpoint: str, hardware: str, config: EvalConfig, out_dir: str | Path,
                         shield_options=None, operator: Operator | None = None, max_steps: int = 400,
                         dry_run: bool = False, record: str | None = None, device: str = "cpu",
                         backend: str | None = None, **executor_options: Any) -> dict[str, Any]:
    """Run the protocol on the robot ``hardware`` names and write ``result.json`` and ``summary.png``.
    Chooses the headless GL backend first, so call it before anything imports mujoco (such as the shield)."""
    from robopolicy.sim.rendering import select_gl_backend

    select_gl_backend()  # before the shield's shadow model imports mujoco, or the cameras cannot render
    from robopolicy.hal.policy_adapter import policy_infer
    from robopolicy.hal.recorder import Recorder
    from robopolicy.hal.session import executor_config, shielded_robot
    from robopolicy.hal.shield.hardware import ShieldOptions
    from robopolicy.hal.spec import load_hardware
    from robopolicy.policy import Policy

    spec = load_hardware(hardware)
    if operator is None:
        operator = SceneOperator() if spec.simulated and spec.task else ConsoleOperator()
    policy = Policy.load(checkpoint, device=device).eval()
    ex_config = executor_config(policy, max_steps=max_steps, **executor_options)
    recorder = Recorder(record, spec) if record else None
    try:
        with shielded_robot(spec, shield_options or ShieldOptions(), dry_run=dry_run, backend=backend,
                            policy=policy) as robot:
            out = run_hardware_episodes(robot, policy_infer(policy, device), ex_config, config, operator, recorder)
    finally:
        if recorder is not None:
            recorder.close()
    result = hardware_result(out, config, operator.labels_success)
    result.update(task=spec.task or spec.name, hardware=spec.name, checkpoint=checkpoint, dry_run=dry_run, videos=[])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "result.json", result, indent=1)
    plot_summary(result, out_dir / "summary.png", f"{spec.name}: {checkpoint}")
    return result
