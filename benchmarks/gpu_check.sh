#!/usr/bin/env bash
# The GPU check, prepared to run once on a GPU machine in under 10 minutes:
#   benchmarks/gpu_check.sh [OUT_DIR]          (default benchmarks/results/gpu_check)
# writes OUT_DIR/gpu_check.json (see benchmarks/gpu_check.py for its sections). Without a CUDA GPU
# it runs the same steps on the CPU at tiny sizes (TINY=1 forces those sizes anywhere).
# PYTHON picks the interpreter (default: python3); the whole run is bounded by LIMIT seconds (570).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu_check}
PYTHON=${PYTHON:-python3}
LIMIT=${LIMIT:-570}
mkdir -p "$OUT"
FLAGS=()
if [ "${TINY:-0}" = 1 ] || ! "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  FLAGS+=(--tiny)
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
timeout "$LIMIT" "$PYTHON" benchmarks/gpu_check.py --json "$OUT/gpu_check.json" "${FLAGS[@]}"
echo "wrote $OUT/gpu_check.json"
