#!/usr/bin/env bash
# Gather what benchmarks/gpu_check.sh installs on a bare accelerator machine (torch present, no
# network): the wheels of pyro-ppl, pyro-api, opt-einsum and tomli-w (pure Python, pinned to
# constraints.txt's and this venv's versions) and the project's own wheel, without their
# dependencies (torch, numpy, tqdm, matplotlib come from the machine), into WHEELS (default
# .whl/, which .gitignore ignores; a few MB). Run it here, once, before sending the tree:
#   benchmarks/gpu_wheels.sh            # PYTHON picks the interpreter whose pip is used
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
mkdir -p "$WHEELS"
rm -f "$WHEELS"/*.whl
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" \
  pyro-ppl==1.9.2 pyro-api==0.1.2 opt-einsum==3.4.0 tomli-w==1.2.0
"$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation -w "$WHEELS" .
ls "$WHEELS"/*.whl
du -sh "$WHEELS"
