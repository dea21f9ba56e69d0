# Sourced by benchmarks/gpu/gpu-*.sh on the GPU machine: installs the wheels that fetch-wheels.sh
# put in .whl/ beside the image's torch, and writes the GPU, driver and package versions to
# $OUT/versions.txt.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=${OUT:?OUT: the folder for the results}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing .whl/ failed: run benchmarks/gpu/fetch-wheels.sh first and bring .whl along" >&2; exit 2; }
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
} > "$out/versions.txt" 2>&1
cat "$out/versions.txt"
