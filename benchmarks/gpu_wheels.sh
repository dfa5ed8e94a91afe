#!/usr/bin/env bash
# Download, on a machine with PyPI access, the wheels that a CUDA machine without internet needs beyond its own
# torch / triton / torch-geometric / numpy / scipy to import zoo and fairchem-core 1.10 and run benchmarks/gpu.sh
# (torch-scatter, which fairchem imports, has no CUDA wheel on PyPI: gpu.sh then uses benchmarks/shims): they land in .whl/
# (git-ignored through .git/info/exclude), which gpu.sh installs with pip --no-index.
# Usage (repository root): bash benchmarks/gpu_wheels.sh [python-version, default 3.12]
set -euo pipefail
PY=${1:-3.12}
EXCLUDE=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCLUDE")"
grep -qx '/.whl/' "$EXCLUDE" 2>/dev/null || echo '/.whl/' >> "$EXCLUDE"
mkdir -p .whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# With their dependencies: what zoo and fairchem-core 1.10 import (fairchem for the SO(2) comparison of gpu.sh).
python3 -m pip download --only-binary=:all: --python-version "$PY" --implementation cp "${PLATFORMS[@]}" \
  -d .whl ase pydantic safetensors huggingface_hub matplotlib lmdb pyyaml
# Without: packages that depend on torch (the machine's own CUDA build must stay the one imported).
python3 -m pip download --no-deps --only-binary=:all: --python-version "$PY" --implementation cp "${PLATFORMS[@]}" \
  -d .whl vesin vesin-torch e3nn opt-einsum opt-einsum-fx fairchem-core==1.10.0
# The machine's numpy / scipy / torch stay: never shadow them.
rm -f .whl/numpy-*.whl .whl/scipy-*.whl .whl/torch-*.whl .whl/nvidia_*.whl .whl/triton-*.whl
# The official EGNN code for benchmarks/egnn_official.py (gpu.sh runs it when .whl/egnn-official exists):
# EGNN_CHECKOUT=<a clone of github.com/vgsatorras/egnn> bash benchmarks/gpu_wheels.sh (else cloned here).
# Without EGNN_CHECKOUT, a shallow clone from GitHub where it is reachable (the comparison is left out otherwise).
if [ -z "${EGNN_CHECKOUT:-}" ] && [ ! -f .whl/egnn-official/qm9/models.py ]; then
  CLONE=$(mktemp -d)
  if GIT_TERMINAL_PROMPT=0 timeout 120 git clone -q --depth 1 https://github.com/vgsatorras/egnn "$CLONE/egnn"; then
    EGNN_CHECKOUT="$CLONE/egnn"
  else
    echo "github.com/vgsatorras/egnn not reachable: the EGNN comparison of gpu.sh is left out"
  fi
fi
if [ -n "${EGNN_CHECKOUT:-}" ]; then
  rm -rf .whl/egnn-official
  mkdir -p .whl/egnn-official
  cp -r "$EGNN_CHECKOUT/models" "$EGNN_CHECKOUT/qm9" .whl/egnn-official/
fi
ls -la .whl
