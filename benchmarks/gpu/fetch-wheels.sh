#!/usr/bin/env bash
# Run on a machine with network access, before a GPU machine without it: the GPU image is expected to
# hold torch, transformers, accelerate, safetensors, Pillow and OpenCV but not diffusers, Hydra,
# OmegaConf (nor its parser runtime, antlr4), so those travel as wheels in .whl/ (git ignores it),
# with the versions the test suite runs on. peft travels too. Python 3.12 there.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl diffusers==0.42.1 hydra-core==1.3.8 omegaconf==2.3.1 peft==0.21.2
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3  # published as a source archive only
ls -l .whl
