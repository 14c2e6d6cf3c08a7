#!/usr/bin/env bash
# One device call: the GPU tests, then the scan benchmark (and the tile sweep with SWEEP=1).
# Logs go to $OUT (when set) and stdout.
set -o pipefail
OUT=${OUT:-/tmp/mambaeye-gpu}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
python3 -m pytest -m gpu tests/ -q -p no:cacheprovider -p no:logging --tb=short ${PYTEST_K:+-k "$PYTEST_K"} 2>&1 | tail -60 | tee "$OUT/gpu_tests.log"
if [ "${SWEEP:-0}" = 1 ]; then (cd benchmarks && python3 scan_sweep.py ${SWEEP_SHAPES:+--shapes $SWEEP_SHAPES}) 2>&1 | tee "$OUT/sweep.log"; fi
if [ "${BENCH:-1}" = 1 ]; then python3 benchmarks/scan.py "$@" 2>&1 | tee "$OUT/bench.log"; cp -r benchmarks/results "$OUT/"; fi
