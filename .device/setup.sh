# Sourced by the .device/gpu-*.sh scripts, THERE, on a lent GPU machine: installs the wheels that
# .device/fetch-wheels.sh put in .whl/ (carried) beside the image's torch, and writes the GPU, driver
# and package versions to $OUT/versions.txt.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
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
} > "$out/versions.txt" 2>&1
cat "$out/versions.txt"
