#!/usr/bin/env bash
# Stacked against sequential training on one GPU, in under 5 minutes: model-steps/s of the
# default Post-LN sort task at 1, 8, 64 and 256 models, in fp32 and bf16, with the peak memory
# of each side (bench/stacked.py does the measuring; its docstring says how).
#
#   bench/gpu_check.sh                 # CUDA, the full check; paste its output in BENCHMARKS.md
#   bench/gpu_check.sh --device cpu    # the same script at tiny sizes, in seconds (the tests run it)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python
DEVICE=cuda
if [ "${1:-}" = "--device" ]; then DEVICE="${2:?--device needs cpu or cuda}"; fi

if [ "$DEVICE" = "cuda" ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  # 2 precisions x 4 sizes x 2 sides x 2 rounds x 3 s, plus set-up: about 3 minutes.
  exec timeout 290 "$PYTHON" bench/stacked.py --device cuda \
    --cases 1:1 1:8 1:64 1:256 --precision fp32 bf16 --rounds 2 --seconds 3
fi
exec timeout 120 "$PYTHON" bench/stacked.py --device "$DEVICE" --size small \
  --cases 1:1 1:8 --precision fp32 bf16 --rounds 1 --seconds 0.1
