#!/usr/bin/env bash
# BC on a robosuite task's scripted demos, CPU-sized: a diffusion head on a 3x512 residual FiLM MLP (the plain
# MLP of Lift's setting reached 2/50 on Square), state observations, min-max normalization, 10k steps, instead
# of the task file's UNet/50k-step default, then 50 test initial conditions with the eval protocol.
# Usage: bash scripts/repro_bc_robosuite.sh can|square
# Collects datasets/<task>_proficient.toml first when runs/datasets/<task>_proficient.zarr is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1  # small MLPs train fastest single-threaded on CPU
TASK=${1:?usage: repro_bc_robosuite.sh can|square}
RP=${RP:-.venv/bin/robopolicy}
DATA=runs/datasets/${TASK}_proficient.zarr
OUT=${OUT:-runs/bc/${TASK}_repro}

[ -e "$DATA" ] || "$RP" collect "${TASK}_proficient"
"$RP" train "task:$TASK" --out "$OUT" --resume never --set train.progress=false --set "train.dataset=\"$DATA\"" \
    --set 'policy.backbone.kind="residual_mlp"' --set 'policy.backbone.hidden_dims=[512, 512, 512]' \
    --set 'policy.normalization="min_max"' --set train.steps=10000 --set train.lr=1e-3 \
    --set train.warmup_steps=500 --set train.val_every=2500 --set train.ckpt_every=2500
"$RP" eval "$OUT/checkpoints/latest" --task "$TASK" --episodes 50 --seeds 1 --out "$OUT/eval" > "$OUT/eval.log"
.venv/bin/python - "$OUT/eval/result.json" "$TASK" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["success"]
print(f"BC {sys.argv[2]} success {s['rate']:.2f} (Wilson 95% CI {s['ci95'][0]:.2f}-{s['ci95'][1]:.2f})")
PY
