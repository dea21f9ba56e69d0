#!/usr/bin/env bash
# Run on the GPU machine, after benchmarks/gpu/fetch-wheels.sh (docs/performance.md): the model
# card's five workflows as one lcm-run sweep on the tiny zoo, on the GPU in its default half
# precision, to see lcm-run's CUDA path run end to end. Its summary.csv, contact sheet and log land
# in $OUT; `DEVICE=cpu` tries the script on a CPU.
set -uo pipefail
source "$(dirname "$0")/setup.sh"
sweep=$(mktemp -d /tmp/gpu-workflows-XXXX)
timeout -k 10 "${GPU_WORKFLOWS_SECONDS:-120}" python3 -m runner.commands.lcm_run -m zoo=tiny "device=${DEVICE:-cuda}" \
    experiment=t2i,inpaint,lora_papercut,controlnet_canny,t2i_adapter_canny "hydra.sweep.dir=$sweep" \
    2>&1 | tee "$out/gpu_workflows.log"
status=${PIPESTATUS[0]}
cp "$sweep/summary.csv" "$out/gpu_workflows_summary.csv" 2>/dev/null
cp "$sweep"/contact_sheet*.png "$out/" 2>/dev/null
exit "$status"
