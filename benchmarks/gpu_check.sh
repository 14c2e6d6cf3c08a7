#!/usr/bin/env bash
# One device call: the GPU tests, then the scan benchmark. Logs go to $OUT (when set) and stdout.
set -o pipefail
OUT=${OUT:-/tmp/mambaeye-gpu}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
python3 -m pytest -m gpu tests/ -q -x -p no:cacheprovider "${PYTEST_ARGS[@]}" 2>&1 | tail -25 | tee "$OUT/gpu_tests.log"
python3 benchmarks/scan.py "$@" 2>&1 | tee "$OUT/bench.log"
cp -r benchmarks/results "$OUT/" 2>/dev/null || true
