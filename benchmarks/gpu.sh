#!/usr/bin/env bash
# GPU checks of zoo.kernels in one command: CUDA tests (pytest -m gpu tests/kernels) and the CUDA benchmark.
# Run from the repository root on a CUDA machine whose python3 has torch (CUDA), triton and torch-geometric.
# Packages it lacks (ase, pydantic, vesin, vesin-torch, fairchem-core 1.10, ...) are installed from .whl/: made by
# benchmarks/gpu_wheels.sh, which this script runs itself when .whl/ is absent and something is missing (PyPI
# needed; on a machine without internet, run gpu_wheels.sh elsewhere and bring .whl/ along). Results go to $OUT (default out/gpu):
# pytest-gpu.log, results.json, results.md, bench.log, env.txt, sweep/, fairchem/, egnn-official/ results.{json,md}.
# SKIP_TESTS=1, SKIP_BENCH=1, SKIP_SWEEP=1, SKIP_FAIRCHEM=1, SKIP_EGNN=1 leave a part out (to split the run over
# calls that may each last 10 minutes: e.g. SKIP_SWEEP=1 SKIP_FAIRCHEM=1 SKIP_EGNN=1, then SKIP_TESTS=1 SKIP_BENCH=1).
set -uo pipefail
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# Where no .whl/ travelled and this python lacks what zoo or the fairchem comparison imports, fetch the wheels
# (and the official EGNN code) first: this needs PyPI / GitHub; without them the parts that need a missing
# package say so and fail or are left out.
if ! compgen -G ".whl/*.whl" > /dev/null \
    && ! python3 -c "import ase, vesin, vesin_torch, e3nn, pydantic, safetensors, fairchem.core" 2> /dev/null; then
  PY_VERSION=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  PIP_DEFAULT_TIMEOUT=15 PIP_RETRIES=1 bash benchmarks/gpu_wheels.sh "$PY_VERSION" > "$OUT/wheels.log" 2>&1 \
    || echo "could not fetch the wheels (see $OUT/wheels.log): using this python's packages as they are"
fi
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/zoo-site .whl/*.whl \
    || exit 1
  export PYTHONPATH="/tmp/zoo-site${PYTHONPATH:+:$PYTHONPATH}"
fi
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
# --confcutdir: only tests/kernels' own setup (tests/ on PYTHONPATH for the golden-fixture helpers of the model
# tests); -m gpu: the CUDA tests, kernels and models on them (Triton SO(2) rotations in eSCN / EquiformerV2).
tests=0 bench=0 sweep=0 fairchem=0 egnn=0
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  PYTHONPATH="tests${PYTHONPATH:+:$PYTHONPATH}" python3 -m pytest -m gpu tests/kernels tests/models/test_fused_backend.py \
    --confcutdir=tests/kernels -q -p no:cacheprovider -rs 2>&1 | tee "$OUT/pytest-gpu.log"
  tests=${PIPESTATUS[0]}
fi
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  python3 -m benchmarks.message_passing --device cuda --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.log"
  bench=${PIPESTATUS[0]}
fi
# Tile sizes / launch options of the Triton message kernels, forward and backward, coordinate search (about 5-7
# minutes; SKIP_SWEEP=1 leaves it out, e.g. where one call may not run past 10 minutes: then run it alone).
if [ "${SKIP_SWEEP:-0}" != 1 ]; then
  python3 -m benchmarks.triton_sweep --out "$OUT/sweep" 2>&1 | tee "$OUT/sweep.log"
  sweep=${PIPESTATUS[0]}
fi
# zoo (own code and SO(2) kernels) against fairchem 1.10 where this python has fairchem-core (from .whl/, see
# gpu_wheels.sh). fairchem imports torch_scatter at start-up; without it, benchmarks/shims stands in (appended to
# the path, so an installed torch-scatter wins). SKIP_FAIRCHEM=1 leaves this out.
FAIRCHEM_PATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/benchmarks/shims"
if [ "${SKIP_FAIRCHEM:-0}" != 1 ] && PYTHONPATH="$FAIRCHEM_PATH" python3 -c "import fairchem.core.models.escn.escn" 2> /dev/null; then
  PYTHONPATH="$FAIRCHEM_PATH" python3 -m benchmarks.fairchem_models --device cuda --out "$OUT/fairchem" \
    --backends torch triton 2>&1 | tee "$OUT/bench-fairchem.log"
  fairchem=${PIPESTATUS[0]}
elif [ "${SKIP_FAIRCHEM:-0}" != 1 ]; then
  echo "fairchem-core 1.10 not importable here: the SO(2) comparison is left out (bash benchmarks/gpu_wheels.sh)"
fi
# egnn-qm9 against the official EGNN code (prediction + forces), where a checkout travelled in .whl/egnn-official
# (EGNN_CHECKOUT=... bash benchmarks/gpu_wheels.sh) or EGNN_CHECKOUT names one here; SKIP_EGNN=1 leaves it out.
EGNN_CHECKOUT=${EGNN_CHECKOUT:-.whl/egnn-official}
if [ "${SKIP_EGNN:-0}" != 1 ] && [ -f "$EGNN_CHECKOUT/qm9/models.py" ]; then
  python3 -m benchmarks.egnn_official "$EGNN_CHECKOUT" --device cuda --out "$OUT/egnn-official" 2>&1 \
    | tee "$OUT/bench-egnn-official.log"
  egnn=${PIPESTATUS[0]}
fi
echo "exit codes: pytest $tests, benchmark $bench, sweep $sweep, fairchem $fairchem, egnn-official $egnn"
exit $(( tests != 0 || bench != 0 || sweep != 0 || fairchem != 0 || egnn != 0 ))
