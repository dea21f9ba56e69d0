"""The twins' weights made exactly representable in float16, so that a repository's `fp16` variant
files (runner.zoo.hub_cache) hold the very values of its full-precision files: a run that reads
either gives the same pixels. Rounding is idempotent, so a file derived from another (the inpainting
UNet from the base's) still holds the base's values."""
from __future__ import annotations

from pathlib import Path


def round_weights_to_half(folder: Path) -> None:
    """Every float32 tensor of every .safetensors file under `folder`, rounded to float16 and back."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    for path in sorted(Path(folder).rglob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        rounded = {name: tensor.half().float() if tensor.dtype == torch.float32 else tensor
                   for name, tensor in tensors.items()}
        save_file(rounded, str(path), metadata=metadata)
        path.chmod(0o644)  # safetensors writes owner-only files; the zoo is a shared cache


def as_half(tensors: dict) -> dict:
    """A state dict as a repository's fp16 variant file holds it: floating tensors in float16."""
    import torch

    return {name: tensor.half() if tensor.dtype == torch.float32 else tensor for name, tensor in tensors.items()}
