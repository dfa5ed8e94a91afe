#!/usr/bin/env bash
# Download, on a machine with PyPI access, the wheels that a CUDA machine without internet needs beyond its own
# torch / triton / torch-geometric / numpy / scipy to import zoo and run benchmarks/gpu.sh: they land in .whl/
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
python3 -m pip download --no-deps --only-binary=:all: --python-version "$PY" --implementation cp "${PLATFORMS[@]}" \
  -d .whl ase pydantic pydantic-core annotated-types typing-inspection vesin vesin-torch \
  e3nn opt-einsum opt-einsum-fx safetensors  # the eSCN / EquiformerV2 tests on the SO(2) kernels need these too
ls -la .whl
