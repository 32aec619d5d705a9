"""`robopolicy` command line: one sub-command per job, each registered by the module that owns it."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from robopolicy import __version__
from robopolicy.errors import CheckpointError, DataError
from robopolicy.specs import ConfigError

# Each module exposes register(subparsers); its sub-commands set `func(args) -> exit code`.
COMMAND_MODULES = (
    "robopolicy.demo_cli",
    "robopolicy.train.cli",
    "robopolicy.data.cli",
    "robopolicy.sim.cli",
    "robopolicy.eval.cli",
    "robopolicy.hal.cli",
    "robopolicy.rl.cli",
    "robopolicy.deploy",
)

DESCRIPTION = """\
Learn robot policies: diffusion, flow-matching, consistency and energy-based heads on one
visuomotor encoder; behavior cloning from zarr demonstrations; simulation, evaluation and data conversion.

typical workflow:
  robopolicy demo                                   # train every head on a toy bimodal task (a few minutes, CPU)
  robopolicy convert demos.hdf5 demos.zarr          # robomimic / robosuite / LeRobot / Minari -> zarr
  robopolicy train recipe.toml --set train.steps=5000
  robopolicy eval runs/bc/checkpoints/best --task lift
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robopolicy", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"robopolicy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _show_own_log_messages() -> None:
    """robopolicy's INFO messages (ahead-of-time compilation, renderer choice) on stderr; other libraries' stay
    at their defaults."""
    logger = logging.getLogger("robopolicy")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("robopolicy: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _show_own_log_messages()
    try:
        return int(args.func(args) or 0)
    except (ConfigError, CheckpointError, DataError, FileNotFoundError) as exc:
        print(f"robopolicy {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"robopolicy {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
