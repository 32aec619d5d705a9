#!/usr/bin/env bash
# Reproduce issue #4's BC figure: tasks/lift.toml's default recipe (diffusion head on a 3x512 MLP, state
# observations) trained on 100 scripted Lift demos, then 50 test initial conditions with the eval protocol.
# Prints the success rate with its Wilson 95% CI. ~15 min training + ~4 min evaluation on one CPU core.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1  # small MLPs train fastest single-threaded on CPU
RP=${RP:-.venv/bin/robopolicy}
OUT=${OUT:-runs/bc/lift_repro}

[ -e runs/datasets/lift_proficient.zarr ] || "$RP" collect lift_proficient
"$RP" train task:lift --out "$OUT" --resume never --set train.progress=false
"$RP" eval "$OUT/checkpoints/latest" --task lift --episodes 50 --seeds 1 --out "$OUT/eval" > "$OUT/eval.log"
.venv/bin/python - "$OUT/eval/result.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["success"]
print(f"BC lift success {s['rate']:.2f} (Wilson 95% CI {s['ci95'][0]:.2f}-{s['ci95'][1]:.2f})")
PY
