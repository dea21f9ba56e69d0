"""Process-level cache of loaded pipelines, kept in a module of its own.

Launchers that pickle the task function by value (Hydra's joblib launcher) copy whatever lives
beside it; state reached through this module survives from one job to the next in a worker.
"""
from __future__ import annotations

import gc
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, Hashable, Optional, Tuple

# How many base pipelines stay loaded at once. One SDXL pipeline is ~7 GB in fp16; a sweep that
# switches models is ordered so that it switches as rarely as possible.
MAX_PIPELINES = 1


@dataclass
class LoadedPipeline:
    pipe: Any
    folder: str  # the local diffusers folder it was loaded from
    scheduler_config: Any  # the model's own scheduler config, before any swap
    adapter_files: Dict[str, str] = field(default_factory=dict)  # adapter name -> loaded file
    fused: Tuple[Tuple[str, float], ...] = ()  # (name, weight) merged into the weights
    lora_enabled: bool = True
    pristine: Dict[Tuple[str, str], Any] = field(default_factory=dict)  # weights before any fuse
    variants: Dict[str, Any] = field(default_factory=dict)  # from_pipe views, by pipeline class


_pipelines: "OrderedDict[Hashable, LoadedPipeline]" = OrderedDict()
# ControlNets and T2I-Adapters are small next to the base: keep a few.
MAX_COMPONENTS = 4
_components: "OrderedDict[Hashable, Any]" = OrderedDict()


def get(key: Hashable) -> Optional[LoadedPipeline]:
    entry = _pipelines.get(key)
    if entry is not None:
        _pipelines.move_to_end(key)
    return entry


def put(key: Hashable, entry: LoadedPipeline) -> None:
    while len(_pipelines) >= MAX_PIPELINES:
        _pipelines.popitem(last=False)
        _release_memory()
    _pipelines[key] = entry


def get_component(key: Hashable) -> Optional[Any]:
    model = _components.get(key)
    if model is not None:
        _components.move_to_end(key)
    return model


def put_component(key: Hashable, model: Any) -> None:
    while len(_components) >= MAX_COMPONENTS:
        _components.popitem(last=False)
        _release_memory()
    _components[key] = model


def clear() -> None:
    _pipelines.clear()
    _components.clear()
    _release_memory()


def _release_memory() -> None:
    gc.collect()
    try:
        import torch
    except ImportError:  # nothing loaded, nothing to free
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
