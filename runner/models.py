"""Loading base pipelines onto a device, once per process (see runner.cache)."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Tuple

import diffusers
import torch
import transformers
from diffusers import DiffusionPipeline

from runner import cache, zoo
from runner.cache import LoadedPipeline
from runner.errors import UserError
from runner.plan import JobPlan
from runner.sources import Source

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Hide loading bars and the known-harmless warnings diffusers and transformers print while
    loading (LoRAs without text-encoder keys, scheduler config keys another scheduler ignores).
    What was loaded is recorded in run.json instead."""
    libraries = (diffusers.utils.logging, transformers.utils.logging)
    levels = [lib.get_verbosity() for lib in libraries]
    bars = [lib.is_progress_bar_enabled() for lib in libraries]
    for lib in libraries:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, level, bar in zip(libraries, levels, bars):
            lib.set_verbosity(level)
            (lib.enable_progress_bar if bar else lib.disable_progress_bar)()


def resolve_device(requested: str) -> str:
    if requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"device.type={requested!r} but torch sees no CUDA GPU here; use device=cpu or device=auto.")
        if requested == "mps" and not torch.backends.mps.is_available():
            raise UserError("device.type='mps' but MPS is not available here; use device=cpu or device=auto.")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(requested: str, device: str) -> torch.dtype:
    if requested == "auto":
        return torch.float32 if device == "cpu" else torch.float16
    return _DTYPES[requested]


def local_path(source: Source, variant=None) -> str:
    """The local folder or file behind a source: builds the tiny zoo or downloads when needed."""
    if source.origin == "zoo":
        zoo.ensure_zoo()
        return source.path
    if source.origin == "local":
        return source.path
    try:
        if source.weight_name:
            from huggingface_hub import hf_hub_download

            return str(Path(hf_hub_download(source.path, source.weight_name)).parent)
        return DiffusionPipeline.download(source.path, variant=variant)
    except Exception as error:  # network, auth, missing repo: all the user's to fix
        raise UserError(
            f"{source.key}={source.ref!r} could not be downloaded ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). Check the name and your network "
            "or token, pre-download it with `hf download`, or run offline with zoo=tiny."
        ) from None


def load_pipeline(plan: JobPlan) -> Tuple[LoadedPipeline, bool]:
    """The base pipeline for a plan, and whether it came from the process cache."""
    device = resolve_device(plan.device)
    dtype = resolve_dtype(plan.dtype, device)
    key = (plan.base.path, plan.variant, device, str(dtype))
    entry = cache.get(key)
    if entry is not None:
        return entry, True
    folder = local_path(plan.base, plan.variant)
    if not (Path(folder) / "model_index.json").is_file():
        raise UserError(
            f"model.source={plan.base.ref!r} resolves to {folder}, which is not a diffusers pipeline "
            "folder (no model_index.json). Point model.source at a folder saved with "
            "save_pretrained, or at a hub id."
        )
    with quiet_libraries():
        pipe = DiffusionPipeline.from_pretrained(folder, dtype=dtype, variant=plan.variant)
    pipe.to(device)
    entry = LoadedPipeline(pipe=pipe, folder=folder, scheduler_config=pipe.scheduler.config)
    cache.put(key, entry)
    return entry, False
