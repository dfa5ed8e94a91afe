#!/usr/bin/env bash
# GPU checks of zoo.kernels in one command: CUDA tests (pytest -m gpu tests/kernels) and the CUDA benchmark.
# Run from the repository root on a CUDA machine whose python3 has torch (CUDA), triton and torch-geometric.
# Packages it lacks (ase, pydantic, vesin, vesin-torch, ...) are installed from .whl/ when that folder exists
# (made by benchmarks/gpu_wheels.sh where PyPI is reachable). Results go to $OUT (default out/gpu):
# pytest-gpu.log, results.json, results.md, bench.log, env.txt, sweep/results.{json,md}.
set -uo pipefail
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
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
PYTHONPATH="tests${PYTHONPATH:+:$PYTHONPATH}" python3 -m pytest -m gpu tests/kernels tests/models/test_fused_backend.py \
  --confcutdir=tests/kernels -q -p no:cacheprovider -rs 2>&1 | tee "$OUT/pytest-gpu.log"
tests=${PIPESTATUS[0]}
python3 -m benchmarks.message_passing --device cuda --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.log"
bench=${PIPESTATUS[0]}
# Tile sizes / launch options of the Triton message kernels, coordinate search (about 5 minutes; SKIP_SWEEP=1
# leaves it out, e.g. where one call may not run past 10 minutes: then run it alone, same command).
if [ "${SKIP_SWEEP:-0}" != 1 ]; then
  python3 -m benchmarks.triton_sweep --out "$OUT/sweep" 2>&1 | tee "$OUT/sweep.log"
fi
# zoo (own code and SO(2) kernels) against fairchem 1.10 where this python has fairchem-core (not required).
if python3 -c "import fairchem.core" 2> /dev/null; then
  python3 -m benchmarks.fairchem_models --device cuda --out "$OUT/fairchem" --backends torch triton 2>&1 \
    | tee "$OUT/bench-fairchem.log"
fi
echo "pytest exit $tests, benchmark exit $bench"
exit $(( tests != 0 || bench != 0 ))
