#!/usr/bin/env bash
# The GPU check, for a bare accelerator machine (torch present; no pyro-ppl, pyro-api, opt-einsum
# or tomli-w; no network; ../shared/data absent). Here, once: benchmarks/gpu_wheels.sh (gathers
# those wheels and the project's own into .whl/, ~1 MB). There, from the repository root:
#   benchmarks/gpu_check.sh [OUT_DIR]          (default benchmarks/results/gpu_check)
# installs the wheels with --no-index --no-deps into OUT_DIR/site (the machine's torch and
# site-packages untouched; skipped when they already import), then writes OUT_DIR/gpu_check.json
# (see benchmarks/gpu_check.py for its sections, figures first, each under its own time limit).
# Without a CUDA GPU it runs the same steps on the CPU at tiny sizes (TINY=1 forces those sizes
# anywhere). PYTHON picks the interpreter (default: python3); the whole run is bounded by LIMIT
# seconds (480 on a GPU; 2400 for the CPU dry run, whose sections get 5 times their limits).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu_check}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
mkdir -p "$OUT"
INSTALLED="none needed"
if [ "${FORCE_WHEELS:-0}" = 1 ] || ! "$PYTHON" -c 'import pyro, pyroapi, opt_einsum, tomli_w' 2>/dev/null; then
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "error: pyro-ppl, pyro-api, opt-einsum or tomli-w is missing and $WHEELS/ holds no wheels;" \
      "run benchmarks/gpu_wheels.sh on a machine with network first and send $WHEELS/ along" >&2
    exit 2
  fi
  SITE="$(cd "$OUT" && pwd)/site"
  "$PYTHON" -m pip install --quiet --no-index --no-deps --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  INSTALLED="installed from $WHEELS: $(cd "$WHEELS" && ls *.whl | tr '\n' ' ')"
fi
FLAGS=()
if [ "${TINY:-0}" = 1 ] || ! "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  FLAGS+=(--tiny)
fi
if [ ${#FLAGS[@]} -gt 0 ]; then LIMIT=${LIMIT:-2400}; else LIMIT=${LIMIT:-480}; fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
timeout "$LIMIT" "$PYTHON" benchmarks/gpu_check.py --json "$OUT/gpu_check.json" \
  --installed "$INSTALLED" "${FLAGS[@]}"
echo "wrote $OUT/gpu_check.json"
