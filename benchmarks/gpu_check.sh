#!/usr/bin/env bash
# The paper preset's GPU path, measured as it runs (about 5 minutes on one H100, plus compiling the
# sampling step four times, not yet timed on a GPU; coral/gpu_check.py): ms/step, TFLOP/s, MFU and peak
# memory of all five objectives at 32 and 64 px in {fp32, bf16} x {NCHW, channels-last}, the sampling
# batch's denoising step (eager; compiled, with and without CUDA graphs) and peak memory, and host syncs.
#   bash benchmarks/gpu_check.sh [OUT_DIR]            # one CUDA GPU; writes OUT_DIR/gpu_check-<gpu>.json
#   bash benchmarks/gpu_check.sh --dry-run [OUT_DIR]  # every code path on the CPU at tiny sizes
set -euo pipefail
cd "$(dirname "$0")/.."
flags=()
if [ "${1:-}" = "--dry-run" ]; then flags+=(--dry-run); shift; fi
out="${1:-benchmarks/results}"
mkdir -p "$out"
"${PYTHON:-python3}" -m coral.gpu_check --out "$out" "${flags[@]}"
