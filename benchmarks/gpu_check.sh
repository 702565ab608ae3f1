#!/usr/bin/env bash
# GPU check, no editing needed: mixed_float16 and XLA against float32 training throughput of the 2D
# and 3D U-Net, MirroredStrategy on the visible GPUs, and the augmentation chain on the GPU; prints
# one table and writes results/benchmarks/gpu.md and gpu.json. Under 5 minutes on one GPU; on a
# machine without a GPU it says so and skips the GPU rows.
# Usage, from anywhere:  bash benchmarks/gpu_check.sh   (PYTHON=/path/to/python to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# A hard limit, so that a hung device never holds the machine past the check's budget.
exec timeout 290 "$PYTHON" benchmarks/bench_gpu.py "$@"
