#!/usr/bin/env bash
# Run THERE, on a lent GPU machine, after .device/fetch-wheels.sh here: the device tool's
#   run  command="bash .device/gpu-bench.sh"  carry=[".whl"]  timeout_s=600
# installs the carried wheels beside the image's torch, then runs `python -m runner.gpu_bench` (extra
# arguments go to it, e.g. --variants eager,all) under a time limit that leaves the call time to
# return. Its tables, its log and the versions it ran on land in $OUT (4 files; 8 come back at most).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:?OUT: the folder whose files come back (the device tool sets it)}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing .whl/ failed: run .device/fetch-wheels.sh here and carry .whl" >&2; exit 2; }
export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 - <<'PY'
import importlib.metadata as metadata, sys
def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"
names = ("torch", "diffusers", "transformers", "peft", "accelerate", "hydra-core", "omegaconf", "triton", "pillow")
print("python", sys.version.split()[0], *(f"{name} {version(name)}" for name in names))
PY
} 2>&1 | tee "$out/versions.txt"
timeout -k 10 "${GPU_BENCH_SECONDS:-540}" python3 -m runner.gpu_bench --out "$out" "$@" 2>&1 | tee "$out/gpu_bench.log"
