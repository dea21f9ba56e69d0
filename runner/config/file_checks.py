"""Checks of the files a job will read, made while planning: torch-free, reading headers only.

A LoRA must be a safetensors file with LoRA weights (whose family runner.config.families judges); pickle files (.bin, .ckpt, .pt) can
run code when loaded, so they are refused unless `allow_pickle=true`; an input image must open.
"""
from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import List, Optional

from runner.errors import UserError
from runner.config.plan_memo import memoized

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
_PICKLE_HINT = ("Pickle files can run arbitrary code when loaded: convert it to .safetensors, or set "
                "allow_pickle=true only for a file you trust.")
_LORA_MARKERS = ("lora_A", "lora_B", "lora_down", "lora_up", "lora.down", "lora.up", "lora_linear_layer")
_MAX_HEADER = 100 * 2**20


@memoized
def check_lora_file(key: str, path: Path, allow_pickle: bool) -> List[str]:
    """The LoRA's layer names (none for an allowed pickle file, which is not read)."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if allow_pickle:
            return []
        raise UserError(f"{key}: {path} is a pickle file. {_PICKLE_HINT}")
    names = safetensors_keys(key, path)
    if not any(marker in name for name in names for marker in _LORA_MARKERS):
        raise UserError(f"{key}: {path} holds no LoRA weights (no keys like '...lora_A.weight' or "
                        "'...lora_down.weight'); it may be a full model. Point it at a LoRA .safetensors file.")
    return names


def safetensors_keys(key: str, path: Path) -> List[str]:
    """The tensor names of a safetensors file, from its JSON header (8-byte length, then JSON)."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if not 0 < length <= min(_MAX_HEADER, os.path.getsize(path) - 8):
                raise ValueError("bad header length")
            header = json.loads(handle.read(length))
        return [name for name in header if name != "__metadata__"]
    except (OSError, ValueError, struct.error) as error:
        raise UserError(f"{key}: {path} is not a readable safetensors file ({error}). Check that the "
                        "download finished, or that the path names the right file.") from None


@memoized
def check_model_folder(key: str, folder: Path, allow_pickle: bool, pipeline: bool) -> None:
    """A diffusers folder: model_index.json (pipelines), and safetensors weights unless allowed."""
    if pipeline and not (folder / "model_index.json").is_file():
        raise UserError(f"{key}: {folder} is not a diffusers pipeline folder (no model_index.json). Point it "
                        "at a folder saved with save_pretrained, or at a hub id.")
    if allow_pickle:
        return
    for weights in [folder, *(sub for sub in folder.iterdir() if sub.is_dir())]:
        if any(weights.glob("*.bin")) and not any(weights.glob("*.safetensors")):
            raise UserError(f"{key}: {weights} has only pickle weights (.bin). {_PICKLE_HINT}")


def check_variant_files(key: str, ref: str, folder: Path, variant: Optional[str]) -> None:
    """Every component of a diffusers folder that has weights has them in `variant` (`fp16`): the
    diffusers loaders would otherwise stop on the first missing one, or read another file."""
    if variant is None:
        return
    try:  # the pipeline's components (a repo may hold other folders: ONNX exports, older VAEs)
        index = json.loads((folder / "model_index.json").read_text())
        parts = [folder / name for name, value in index.items() if isinstance(value, list) and value[0]]
    except (OSError, ValueError, AttributeError, IndexError):
        return  # check_model_folder reports an unreadable folder
    for component in sorted(part for part in parts if part.is_dir()):
        names = [p.name for p in component.iterdir() if p.name.endswith(WEIGHT_FILES)]
        if names and not any(f".{variant}." in name or f".{variant}-" in name for name in names):
            relative = component.relative_to(folder).as_posix()
            wanted = f"{relative}/*.{variant}.safetensors"
            cached = re.match(r"^[\w.-]+/[\w.-]+$", ref) and not Path(ref).exists()  # a hub id, read from the cache
            fetch = f"Download them (`hf download {ref} --include '{wanted}'`), or set" if cached else "Set"
            raise UserError(
                f"{key}={ref!r} with model.variant={variant!r}: {folder} has no {variant} weights for "
                f"{relative} (looked for {wanted}; found {', '.join(sorted(names))}). {fetch} "
                "model.variant=null to read the full-precision files.")


WEIGHT_FILES = (".safetensors", ".bin")


def check_checkpoint_file(key: str, path: Path, allow_pickle: bool, prefix: str, what: str) -> None:
    """A single-file model: a safetensors file whose keys start with `prefix` (a full SDXL checkpoint:
    `model.diffusion_model.`), or a pickle file the user allowed."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if allow_pickle:
            return
        raise UserError(f"{key}: {path} is a pickle file. {_PICKLE_HINT}")
    names = safetensors_keys(key, path)
    if not any(name.startswith(prefix) for name in names):
        lora = any(marker in name for name in names for marker in _LORA_MARKERS)
        raise UserError(f"{key}: {path} is not {what} (no '{prefix}…' keys){': it holds LoRA weights' if lora else ''}. "
                        "Point it at a single-file checkpoint as A1111 or ComfyUI load them, or at a diffusers folder.")


VAE_CLASSES = ("AutoencoderKL", "AutoencoderTiny")


@memoized
def check_vae_folder(key: str, folder: Path, allow_pickle: bool) -> None:
    """A diffusers VAE folder: config.json naming a VAE class the SDXL pipelines decode with."""
    try:
        found = json.loads((folder / "config.json").read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        found = None
    if found not in VAE_CLASSES:
        raise UserError(f"{key}: {folder} is not a diffusers VAE folder (its config.json names "
                        f"{found or 'no class'}; expected {' or '.join(VAE_CLASSES)}). Point it at a VAE such as "
                        "madebyollin/sdxl-vae-fp16-fix or madebyollin/taesdxl, or drop it to keep the model's own.")
    check_model_folder(key, folder, allow_pickle, pipeline=False)


@memoized
def check_image_file(key: str, path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise UserError(f"{key}: {path} is not a readable image ({type(error).__name__}). Pass a PNG or "
                        "JPEG file.") from None


def check_writable(key: str, folder: Path) -> None:
    """The output folder can be created: its nearest existing parent is a writable folder."""
    parent = folder
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{key}: cannot write into {folder}: {parent} is not a writable folder. "
                        "Choose another output folder (paths.root=..., hydra.run.dir=... or hydra.sweep.dir=...).")
