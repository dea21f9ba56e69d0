"""Applying a job's LoRA stack to a cached pipeline without reloading what is already there.

Each LoRA file is loaded once per pipeline, under its adapter name. A job that only changes
adapter weights costs a `set_adapters` call. Fusing follows `fuse_lora`: the whole stack is
merged (as the card's `pipe.fuse_lora()`), never part of it, because peft ignores live adapters
in a layer where another one is merged. Un-fusing restores the exact weights saved before the
first fuse instead of trusting `unfuse_lora`'s subtraction, so a job's pixels never depend on
what ran before it in the process.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

from peft.tuners.tuners_utils import BaseTunerLayer

from runner.cache import LoadedPipeline
from runner.models import local_path, quiet_libraries
from runner.plan import AdapterPlan

_LORA_COMPONENTS = ("unet", "text_encoder", "text_encoder_2")


def apply_stack(loaded: LoadedPipeline, adapters: Sequence[AdapterPlan], fuse: bool) -> List[Dict[str, Any]]:
    """Bring the pipeline to exactly this stack; returns one record per adapter."""
    records = [_ensure_loaded(loaded, adapter) for adapter in adapters]
    names = [a.name for a in adapters]
    weights = [a.weight for a in adapters]
    wanted_fused = tuple(zip(names, weights)) if fuse else ()
    if loaded.fused != wanted_fused:
        _restore_pristine(loaded)
    if adapters:
        _set_enabled(loaded, True)
        if loaded.fused != wanted_fused or not fuse:  # an already fused stack needs nothing
            loaded.pipe.set_adapters(names, adapter_weights=weights)
        if loaded.fused != wanted_fused:
            _save_pristine(loaded)
            loaded.pipe.fuse_lora(adapter_names=names)
            loaded.fused = wanted_fused
    elif loaded.adapter_files:
        _set_enabled(loaded, False)
    return records


def _ensure_loaded(loaded: LoadedPipeline, adapter: AdapterPlan) -> Dict[str, Any]:
    folder = local_path(adapter.source)
    file = str(Path(folder) / adapter.source.weight_name) if adapter.source.weight_name else folder
    hit = loaded.adapter_files.get(adapter.name) == file
    if not hit:
        if adapter.name in loaded.adapter_files:  # same name, another file: replace it
            _restore_pristine(loaded)
            loaded.pipe.delete_adapters(adapter.name)
        path = Path(file)
        with quiet_libraries():
            loaded.pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter.name)
        loaded.adapter_files[adapter.name] = file
    return {"name": adapter.name, "source": adapter.source.ref, "file": file,
            "weight": adapter.weight, "cache": "hit" if hit else "miss"}


def _set_enabled(loaded: LoadedPipeline, enabled: bool) -> None:
    if loaded.lora_enabled != enabled:
        (loaded.pipe.enable_lora if enabled else loaded.pipe.disable_lora)()
        loaded.lora_enabled = enabled


def _tuner_layers(loaded: LoadedPipeline):
    for component in _LORA_COMPONENTS:
        model = getattr(loaded.pipe, component, None)
        if model is None:
            continue
        for name, module in model.named_modules():
            if isinstance(module, BaseTunerLayer):
                yield (component, name), module.get_base_layer()


def _save_pristine(loaded: LoadedPipeline) -> None:
    """Copy the weights of every LoRA-targeted layer not saved yet (they are unmerged now)."""
    for key, base in _tuner_layers(loaded):
        if key not in loaded.pristine:
            loaded.pristine[key] = {name: p.detach().to("cpu", copy=True) for name, p in base.named_parameters(recurse=False)}


def _restore_pristine(loaded: LoadedPipeline) -> None:
    if not loaded.fused:
        return
    _set_enabled(loaded, True)  # peft un-merges on its own while disabled; keep the bookkeeping ours
    loaded.pipe.unfuse_lora()
    for key, base in _tuner_layers(loaded):
        saved = loaded.pristine.get(key)
        for name, param in base.named_parameters(recurse=False):
            if saved is not None:
                param.data.copy_(saved[name])
    loaded.fused = ()
