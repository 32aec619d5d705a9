"""``robopolicy deploy`` and ``eval --hardware`` (and ``evaluate_on_hardware``, which the demo calls) choose the
headless GL backend before the shield imports mujoco, so a simulated robot's cameras render with ``MUJOCO_GL`` unset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.test_deploy import checkpoint  # noqa: F401 - the fixture

SCRIPT = """
import argparse, sys
import robopolicy.deploy
from robopolicy.eval.hardware import SceneOperator, evaluate_on_hardware
from robopolicy.eval.protocol import EvalConfig
ckpt, out = sys.argv[1], sys.argv[2]
assert "mujoco" not in sys.modules and "robopolicy.sim" not in sys.modules  # nothing chose a GL backend yet
parser = argparse.ArgumentParser()
robopolicy.deploy.register(parser.add_subparsers())
args = parser.parse_args(["deploy", ckpt, "--hardware", "panda_sim", "--steps", "3", "--no-collision", "--out", out])
assert args.func(args) == 0
config = EvalConfig(n_episodes=1, policy_seeds=[0], n_videos=0)
assert not evaluate_on_hardware(ckpt, "panda_sim", config, out, operator=SceneOperator(), max_steps=3)["aborted"]
print("rendered")
"""


def test_cameras_render_without_mujoco_gl(tmp_path, checkpoint) -> None:  # noqa: F811
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(checkpoint), str(tmp_path)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "rendered" in done.stdout, done.stderr[-3000:]
