"""Applying a job's LoRA stack to a cached pipeline without reloading what is already there.

Each LoRA file is loaded once per pipeline, under its adapter name. A job that only changes
adapter weights costs a `set_adapters` call. A new file under a loaded adapter's name is copied
into that adapter's layers in place (peft's hotswap) where that is exact — see `_hotswap` — so that
no layers are rebuilt and a compiled UNet keeps its graphs; otherwise the adapter is reloaded.
Fusing follows `fuse_lora`: the whole stack is merged (as the card's `pipe.fuse_lora()`), never part
of it, because peft ignores live adapters in a layer where another one is merged. A model is copied
out of its weight files before its first fuse (`_own_weights`). Un-fusing restores the exact weights
from the model's files instead of trusting `unfuse_lora`'s subtraction, so a job's pixels never
depend on what ran before it in the process. Once fused, peft's layers only pass their input to the
merged base layer; they are taken out of the model until the stack changes (`_bypass_merged`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Set

from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.hotswap import prepare_model_for_compiled_hotswap

from runner.engine.state import LoadedPipeline
from runner.errors import UserError
from runner.engine.file_copies import FileCopies
from runner.engine.models import as_loaded, local_path, quiet_libraries
from runner.config.job_plan import AdapterPlan

_LORA_COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
_TEXT_ENCODERS = ("text_encoder", "text_encoder_2")


def apply_stack(loaded: LoadedPipeline, adapters: Sequence[AdapterPlan], fuse: bool) -> List[Dict[str, Any]]:
    """Bring the pipeline to exactly this stack; returns one record per adapter."""
    names = [a.name for a in adapters]
    weights = [a.weight for a in adapters]
    wanted_fused = tuple(zip(names, weights)) if fuse else ()
    files = [_file_of(adapter) for adapter in adapters]
    if wanted_fused and loaded.fused == wanted_fused and all(_is_loaded(loaded, n, f) for n, f in zip(names, files)):
        # fused already (and its layers bypassed): nothing to change
        return [_record(adapter, file, hit=True, swapped=False) for adapter, file in zip(adapters, files)]
    _put_back_bypassed(loaded)  # peft's calls below expect its layers in place
    records = [_ensure_loaded(loaded, adapter, file) for adapter, file in zip(adapters, files)]
    if loaded.fused != wanted_fused:
        _restore_pristine(loaded)
    if adapters:
        _set_enabled(loaded, True)
        loaded.pipe.set_adapters(names, adapter_weights=weights)
        if fuse:  # unfused by now: a stack fused as wanted returned above
            _own_weights(loaded)
            loaded.pipe.fuse_lora(adapter_names=names)
            loaded.fused = wanted_fused
            _bypass_merged(loaded)
    elif loaded.adapter_files:
        _set_enabled(loaded, False)
    return records


def _own_weights(loaded: LoadedPipeline) -> None:
    """Before a fuse, copy each model that holds LoRA layers out of its weight files, once. A weight
    loaded from a safetensors file on the CPU is a copy-on-write view of the file: fusing into it
    faults in and copies each 4 KB page on its own. Copied first, the fuse is arithmetic alone; copied
    whole, the model no longer maps its file (a copy of the fused layers alone would leave the
    file's pages mapped beside it); read from the file rather than through the mapping
    (runner.engine.file_copies), the copy maps none of it meanwhile; each copy keeps its tensor's
    alignment, so pixels do not change. Figures: docs/performance.md."""
    for component in _LORA_COMPONENTS:
        model = getattr(loaded.pipe, component, None)
        if model is None or component in loaded.owned or not _holds_lora(model):
            continue
        with FileCopies() as copies:  # read from the files: a copy through the mapping maps every page
            for parameter in model.parameters():
                if parameter.device.type == "cpu":
                    parameter.data = copies.copy(parameter.data)
        loaded.owned.add(component)


def _holds_lora(model: Any) -> bool:
    return any(isinstance(module, BaseTunerLayer) for module in model.modules())


def _bypass_merged(loaded: LoadedPipeline) -> None:
    """Put each LoRA layer's base layer (its weights merged) where the layer was. A merged peft layer
    computes nothing but its base layer; its Python wrapper around each of SDXL's ~800 targeted
    layers, and diffusers' walks over every module to find the pipeline's device, cost ~50 ms per
    4-step call here (tiny zoo, 384², CPU; 3088 UNet modules instead of 658), pixels unchanged. This
    is what peft's unload does, but the layers are kept to be put back when the stack changes, so
    that nothing is reloaded."""
    for component in _LORA_COMPONENTS:
        model = getattr(loaded.pipe, component, None)
        if model is None:
            continue
        layers = [(name, module) for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)]
        for name, layer in layers:
            parent_name, _, attribute = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            setattr(parent, attribute, layer.get_base_layer())
            loaded.bypassed.append((parent, attribute, layer))


def _put_back_bypassed(loaded: LoadedPipeline) -> None:
    """The LoRA layers back where `_bypass_merged` took them from."""
    for parent, attribute, layer in reversed(loaded.bypassed):
        setattr(parent, attribute, layer)
    loaded.bypassed.clear()


def _file_of(adapter: AdapterPlan) -> str:
    folder = local_path(adapter.source)
    return str(Path(folder) / adapter.source.weight_name) if adapter.source.weight_name else folder


def _is_loaded(loaded: LoadedPipeline, name: str, file: str) -> bool:
    return loaded.adapter_files.get(name) == file


def _record(adapter: AdapterPlan, file: str, hit: bool, swapped: bool) -> Dict[str, Any]:
    return {"name": adapter.name, "source": adapter.source.ref, "file": file,
            "weight": adapter.weight, "cache": "hit" if hit else "miss", "hotswap": swapped}


def _ensure_loaded(loaded: LoadedPipeline, adapter: AdapterPlan, file: str) -> Dict[str, Any]:
    hit = _is_loaded(loaded, adapter.name, file)
    swapped = False
    if not hit:
        path = Path(file)
        if adapter.name in loaded.adapter_files:  # same name, another file: replace it
            _restore_pristine(loaded)
            swapped = _hotswap(loaded, adapter.name, path)
            if not swapped:
                loaded.pipe.delete_adapters(adapter.name)
        if not swapped:
            with quiet_libraries():
                loaded.pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter.name)
            _pad_for_hotswap(loaded, adapter)
        loaded.adapter_files[adapter.name] = file
    return _record(adapter, file, hit, swapped)


def _hotswap(loaded: LoadedPipeline, name: str, path: Path) -> bool:
    """Copy the LoRA file at `path` into the live adapter `name` in place, where that gives what a
    fresh load gives: the UNet only (diffusers cannot hotswap text-encoder LoRAs, and an old adapter's
    text-encoder layers would stay behind), and no layer that the old adapter lacks (peft refuses
    those before changing anything; layers the new file lacks are zeroed). False: the caller deletes
    the adapter, whatever a failed swap changed, and loads the file fresh."""
    pipe = loaded.pipe
    if name in text_encoder_adapters(pipe):
        return False
    try:
        with quiet_libraries():
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name, hotswap=True)
    except (RuntimeError, ValueError, NotImplementedError, TypeError):
        return False
    _keep_swapped_scales(pipe.unet, name)
    return True


def text_encoder_adapters(pipe: Any) -> Set[str]:
    """The adapters loaded into either text encoder (those whose files hold text-encoder layers)."""
    return {name for component in _TEXT_ENCODERS
            for name in (getattr(getattr(pipe, component, None), "peft_config", None) or {})}


def _pad_for_hotswap(loaded: LoadedPipeline, adapter: AdapterPlan) -> None:
    """device.lora_hotswap_rank: pad the UNet's LoRA layers to that rank (zeros: the same output),
    so that a later file of a rank up to it swaps into them in place and a compiled UNet keeps its
    graphs. A file of a higher rank is refused before anything is padded (peft would stop halfway)."""
    target = loaded.hotswap_rank
    if target is None:
        return
    unet = loaded.pipe.unet
    ranks = [module.r[adapter.name] for module in unet.modules()
             if isinstance(module, LoraLayer) and adapter.name in module.r]
    if not ranks:  # a file for the text encoders only
        return
    if max(ranks) > target:
        loaded.pipe.delete_adapters(adapter.name)
        loaded.adapter_files.pop(adapter.name, None)
        raise UserError(
            f"device.lora_hotswap_rank={target} is below the rank of lora.{adapter.name} "
            f"({adapter.source.ref!r}), whose UNet layers go up to rank {max(ranks)}. Set "
            f"device.lora_hotswap_rank to the highest rank among the LoRA files the sweep loads (at least "
            f"{max(ranks)}), or to null to pad nothing.")
    prepare_model_for_compiled_hotswap(unet, target_rank=target, check_compiled="ignore")


def _keep_swapped_scales(unet: Any, name: str) -> None:
    """peft's hotswap sets each layer's scale to the new file's alpha / rank, but keeps the old
    `lora_alpha`, from which `set_adapters` recomputes the scale: without this, a LoRA of another
    alpha drew up to 91 levels (of 255) away from a fresh load once its weight was set."""
    for module in unet.modules():
        if isinstance(module, LoraLayer) and name in module.scaling:
            rank = module.r[name]
            root = rank ** 0.5 if module.use_rslora.get(name, False) else rank
            module.lora_alpha[name] = float(module.scaling[name]) * root


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


def _restore_pristine(loaded: LoadedPipeline) -> None:
    """Put back, exactly, the weights the fused stack changed: as the model's files hold them, read
    at the first change of a fused stack and kept for the next (memory-mapped where the files hold
    the pipeline's dtype). Nothing is copied before that: a run or sweep with one fused stack (the
    card's fused LCM-LoRA) keeps no second copy of the ~800 layers it fuses, 5 GB in fp16 and 10 GB
    in fp32 on full-size SDXL."""
    if not loaded.fused:
        return
    _set_enabled(loaded, True)  # peft un-merges on its own while disabled; keep the bookkeeping ours
    loaded.pipe.unfuse_lora()
    with FileCopies() as copies:  # read from the files: through the mapping, its pages would stay resident
        for (component, name), base in _tuner_layers(loaded):
            if component not in loaded.pristine:
                loaded.pristine[component] = as_loaded(loaded, component)
            original = loaded.pristine[component].get_submodule(name)
            for parameter_name, parameter in base.named_parameters(recurse=False):
                copies.copy_into(parameter.data, getattr(original, parameter_name))
    loaded.fused = ()
