#!/usr/bin/env bash
# The GPU benchmark, ready to run on a machine with one CUDA GPU (about 5 minutes on an H100):
#   bash benchmarks/run_gpu.sh [OUT_DIR]
# writes benchmarks/results/{paper,embedded}-<gpu name>.{json,csv}.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results}"
python -m coral bench --size paper --out "$out" --rounds 5 --repeats 10
python -m coral bench --size embedded --out "$out" --rounds 5 --repeats 20
