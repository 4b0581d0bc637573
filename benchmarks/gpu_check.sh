#!/usr/bin/env bash
# The paper preset's GPU path, measured as it runs, in 6 minutes at most on one GPU (coral/gpu_check.py has
# the budget and the order): training steps eager, compiled and with CUDA graphs, fp32/TF32 and bf16, NCHW
# and channels-last, per-GPU batches of 128, 16, 32 and 64; the sampler's step eager and compiled; peak
# memory; host syncs. `coral plan` reads the JSON and takes the fastest measured configuration per setting.
#   bash benchmarks/gpu_check.sh [OUT_DIR]            # one CUDA GPU; writes OUT_DIR/gpu_check-<gpu>.json
#   bash benchmarks/gpu_check.sh --dry-run [OUT_DIR]  # every code path on the CPU at tiny sizes
set -euo pipefail
cd "$(dirname "$0")/.."
flags=()
if [ "${1:-}" = "--dry-run" ]; then flags+=(--dry-run); shift; fi
out="${1:-benchmarks/results}"
mkdir -p "$out"
"${PYTHON:-python3}" -m coral.gpu_check --out "$out" "${flags[@]}"
