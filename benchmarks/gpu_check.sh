#!/usr/bin/env bash
# The device check, one script, under 5 minutes on one GPU:
#   1. the fast path against its reference on the device, float32 and bfloat16 (benchmarks/gpu_check.py);
#   2. the Qwen3-VL-2B-shape bench at 1024x1024, N = 1, 10, 100, cold and warm against dense-official and
#      dense-batched, bfloat16 weights with the float32 score head.
# Usage: benchmarks/gpu_check.sh [--cpu] [OUT]   (--cpu: the same steps on this machine, at the small shape)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DEVICE=cuda SHAPE=qwen3-vl-2b SIZES="1024" DTYPE=bfloat16 DENSE="--dense-pairs 4 --dense-batch 8"
if [ "${1:-}" = "--cpu" ]; then
  shift
  DEVICE=cpu SHAPE=small SIZES="256" DTYPE=float32 DENSE="--dense-pairs 1 --dense-batch 2"
fi
OUT=${1:-bench-gpu-check}
mkdir -p "$OUT"
start=$(date +%s)
timeout 120 "$PY" benchmarks/gpu_check.py --device "$DEVICE" 2>&1 | tee "$OUT/fast_vs_reference.txt"
# shellcheck disable=SC2086  # the option groups are word lists on purpose
timeout 420 "$PY" -c "import sys; from minirerank_integrations.cli import main; sys.exit(main())" bench --shape "$SHAPE" --sizes $SIZES --warm-n 1 10 100 \
  $DENSE --ingest-docs 4 --text-candidates 10 --device "$DEVICE" --dtype "$DTYPE" --guide-layers 2 all \
  --out "$OUT" 2>"$OUT/bench.log" | tee "$OUT/summary.txt"
echo "gpu_check: done in $(( $(date +%s) - start )) s; results in $OUT"
