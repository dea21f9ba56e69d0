#!/usr/bin/env bash
# Run THERE, on a lent GPU machine, after .device/fetch-wheels.sh here (PERF.md, "On a lent GPU
# machine"): `python -m runner.gpu_bench` (extra arguments go to it, e.g. --variants eager,all) under
# a time limit that leaves the device call time to return. Its tables and log land in $OUT.
set -uo pipefail
source "$(dirname "$0")/setup.sh"
timeout -k 10 "${GPU_BENCH_SECONDS:-540}" python3 -m runner.gpu_bench --out "$out" "$@" 2>&1 | tee "$out/gpu_bench.log"
