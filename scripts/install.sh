#!/usr/bin/env bash
# One-step installer: creates .venv (unless VENV is set), keeps an existing torch (e.g. a CUDA build),
# otherwise installs the CPU build torch==2.13.0 first so that pip never pulls the multi-GB CUDA wheels.
# Usage: bash scripts/install.sh [EXTRAS]   (EXTRAS defaults to "all", e.g. "sim,data,test")
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-all}"
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install --quiet --upgrade pip
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".[${EXTRAS}]"
echo "robopolicy installed in $VENV ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
