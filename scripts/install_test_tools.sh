#!/usr/bin/env bash
# Installs the third-party tools that the data tests use to *produce* real inputs, kept out of the main
# install: lerobot 0.4.4 and 0.3.3 (create LeRobotDatasets v3.0 and v2.1), minari (creates Minari datasets), and the robosuite 1.4.1
# demonstration files (extracted from its wheel, not installed). Idempotent; quick when already present.
# Usage: bash scripts/install_test_tools.sh   (TOOLS_VENV defaults to .venv-tools, TOOLS_CACHE to .cache/test-data)
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS_VENV="${TOOLS_VENV:-.venv-tools}"
TOOLS_CACHE="${TOOLS_CACHE:-.cache/test-data}"
STAMP="$TOOLS_VENV/.robopolicy-tools-v2"

if [ ! -f "$STAMP" ]; then
    python3 -m venv "$TOOLS_VENV"
    PY="$TOOLS_VENV/bin/python"
    "$PY" -m pip install --quiet --upgrade pip
    # torch first, pinned, so that pip takes the local CPU build and never the CUDA wheels.
    "$PY" -m pip install --quiet "torch==2.13.0"
    # torchvision and lerobot without their dependencies: lerobot pins torch<2.11 and pulls robot drivers,
    # wandb, rerun; only what LeRobotDataset.create / add_frame / save_episode import is installed below.
    "$PY" -m pip install --quiet --no-deps "torchvision==0.28.0" "lerobot==0.4.4"
    "$PY" -m pip install --quiet "datasets>=4,<5" "huggingface-hub<0.36" "pandas" "pyarrow" "av>=15,<16" \
        "jsonlines" "packaging<26" "pillow" "draccus==0.10.0" "deepdiff" "termcolor" "einops" "imageio" \
        "fsspec" "numpy>=2" "accelerate"
    # lerobot 0.3.3 writes the older v2.1 layout; kept beside 0.4.x and put on sys.path only when asked for.
    "$PY" -m pip install --quiet --no-deps --upgrade --target "$TOOLS_VENV/lerobot-0.3.3" "lerobot==0.3.3"
    "$PY" -m pip install --quiet "minari[hdf5,arrow]==0.5.4" "gymnasium>=1.1"
    touch "$STAMP"
fi

# tensorflow-datasets with a CPU TensorFlow writes the RLDS test datasets, in a venv of its own (it pins its own
# numpy and protobuf). Measured here: ~50 s, 1.8 GB, no CUDA wheels (tensorflow-cpu).
TFDS_VENV="$TOOLS_VENV/tfds"
if [ ! -f "$TFDS_VENV/.robopolicy-tfds-v1" ]; then
    python3 -m venv "$TFDS_VENV"
    "$TFDS_VENV/bin/python" -m pip install --quiet --upgrade pip
    "$TFDS_VENV/bin/python" -m pip install --quiet "tensorflow-cpu==2.21.0" "tensorflow-datasets==4.9.10"
    touch "$TFDS_VENV/.robopolicy-tfds-v1"
fi

# What LeRobot's DiffusionPolicy imports beyond the dataset tools (scripts/compare_peers.py): diffusers below 0.36
# (lerobot 0.4.4's bound; its schedulers) and pyserial (lerobot.policies imports lerobot.motors). No torch change.
if [ ! -f "$TOOLS_VENV/.robopolicy-peers-v1" ]; then
    "$TOOLS_VENV/bin/python" -m pip install --quiet "diffusers==0.35.2" "pyserial==3.5"
    touch "$TOOLS_VENV/.robopolicy-peers-v1"
fi

# robosuite 1.4.1 itself, to replay the demo states with another release than the stack's 1.5.2 (version drift).
# Measured here: ~260 s (numba, scipy, opencv), 1.3 GB.
RS141_VENV="$TOOLS_VENV/robosuite-1.4.1"
if [ ! -f "$RS141_VENV/.robopolicy-robosuite-v1" ]; then
    python3 -m venv "$RS141_VENV"
    "$RS141_VENV/bin/python" -m pip install --quiet --upgrade pip
    "$RS141_VENV/bin/python" -m pip install --quiet "robosuite==1.4.1" "mujoco==3.3.7" "numpy<2" "h5py"
    touch "$RS141_VENV/.robopolicy-robosuite-v1"
fi

DEMOS="$TOOLS_CACHE/robosuite-1.4.1"
if [ ! -f "$DEMOS/lift/demo.hdf5" ]; then
    TMP="$(mktemp -d)"
    trap 'rm -rf "$TMP"' EXIT
    "$TOOLS_VENV/bin/python" -m pip download --quiet --no-deps "robosuite==1.4.1" -d "$TMP"
    mkdir -p "$DEMOS.partial"
    "$TOOLS_VENV/bin/python" - "$TMP"/robosuite-1.4.1-*.whl "$DEMOS.partial" <<'PY'
import sys, zipfile
from pathlib import Path
wheel, out = sys.argv[1], Path(sys.argv[2])
prefix = "robosuite/models/assets/demonstrations/"
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.startswith(prefix) and name.endswith(".hdf5"):
            dst = out / name[len(prefix):]
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(zf.read(name))
PY
    rm -rf "$DEMOS"
    mv "$DEMOS.partial" "$DEMOS"
fi
echo "test tools ready: $TOOLS_VENV, robosuite demos in $DEMOS"
