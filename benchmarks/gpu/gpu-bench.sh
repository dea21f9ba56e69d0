#!/usr/bin/env bash
# Run on the GPU machine, after benchmarks/gpu/fetch-wheels.sh (docs/performance.md):
# `python -m benchmarks.gpu_bench` (extra arguments go to it, e.g. --variants eager,all) under a time
# limit. Its tables and log land in $OUT.
set -uo pipefail
source "$(dirname "$0")/setup.sh"
timeout -k 10 "${GPU_BENCH_SECONDS:-540}" python3 -m benchmarks.gpu_bench --out "$out" "$@" 2>&1 | tee "$out/gpu_bench.log"
