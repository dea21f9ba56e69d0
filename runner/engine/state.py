"""What the process keeps loaded from one job to the next, behind one object with one reset().

`ENGINE` holds the base pipelines (each with its adapters, prompt embeddings, pipeline variants and
compiled graphs: `LoadedPipeline`), the ControlNets and T2I-Adapters, and the conditioning images
made for recent jobs. It lives in a module of its own: launchers that pickle the task function by
value (Hydra's joblib launcher) copy whatever lives beside it; state reached through this module
survives from one job to the next in a worker. This module imports torch only to free memory.
"""
from __future__ import annotations

import gc
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, Hashable, List, Optional, Set, Tuple

# How many base pipelines stay loaded at once. One SDXL pipeline is ~7 GB in fp16; a sweep that
# switches models is ordered so that it switches as rarely as possible.
MAX_PIPELINES = 1


@dataclass
class LoadedPipeline:
    pipe: Any
    folder: str  # the local diffusers folder it was loaded from
    scheduler_config: Any  # the model's own scheduler config, before any swap
    device: str = "cpu"  # where it runs (the execution device, when offloaded), as torch names it
    dtype: Any = None  # its torch dtype
    scheduler: Any = None  # (spec, scheduler) last built: the next job with the same spec reuses it
    vae_folder: Optional[str] = None  # the folder of a VAE that replaced the model's own (model.vae)
    config_folder: Optional[str] = None  # a single-file base: where its configs come from (model.config)
    adapter_files: Dict[str, str] = field(default_factory=dict)  # adapter name -> loaded file
    fused: Tuple[Tuple[str, float], ...] = ()  # (name, weight) merged into the weights
    lora_enabled: bool = True
    variant: Optional[str] = None  # the weight files' variant it was loaded with (model.variant)
    use_safetensors: Optional[bool] = None  # True: safetensors files only (model.allow_pickle=false)
    pristine: Dict[str, Any] = field(default_factory=dict)  # component -> as loaded, before any fuse (runner.engine.lora)
    owned: Set[str] = field(default_factory=set)  # components copied out of their weight files (runner.engine.lora)
    bypassed: List[Tuple[Any, str, Any]] = field(default_factory=list)  # see runner.engine.lora._bypass_merged
    variants: Dict[str, Any] = field(default_factory=dict)  # from_pipe views, by pipeline class
    prompt_embeddings: Dict[Tuple, Any] = field(default_factory=dict)  # see runner.engine.generation
    compile: Dict[str, Any] = field(default_factory=dict)  # device.compile*, applied at the first job
    hotswap_rank: Optional[int] = None  # device.lora_hotswap_rank: UNet LoRAs padded to it
    compiled: bool = False


class _LastUsed:
    """Keeps the `capacity` most recently used entries; evicting one frees its memory."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: "OrderedDict[Hashable, Any]" = OrderedDict()

    def get(self, key: Hashable) -> Optional[Any]:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: Hashable, entry: Any) -> None:
        while len(self._entries) >= self.capacity:
            self._entries.popitem(last=False)
            _release_memory()
        self._entries[key] = entry

    def clear(self) -> None:
        self._entries.clear()


    def entries(self) -> List[Any]:
        """The entries kept, least recently used first."""
        return list(self._entries.values())


# ControlNets and T2I-Adapters are small next to the base: keep a few.
MAX_COMPONENTS = 4


class EngineState:
    """The process's loaded state. `reset()` forgets all of it and frees its memory."""

    KEPT_INPUTS = 4  # prepared conditioning sets: a sweep switches its images rarely (cost order)

    def __init__(self) -> None:
        self.pipelines = _LastUsed(MAX_PIPELINES)  # key -> LoadedPipeline
        self.components = _LastUsed(MAX_COMPONENTS)  # key -> (ControlNet / T2I-Adapter, folder)
        # conditioning key -> (pipeline keywords, images fed); id(image) -> (image, its PNG bytes)
        self.prepared_inputs: "OrderedDict[Tuple, Tuple[Dict[str, Any], Dict[str, Any]]]" = OrderedDict()
        self.encoded_inputs: "OrderedDict[int, Tuple[Any, bytes]]" = OrderedDict()

    def loaded_pipelines(self) -> List[LoadedPipeline]:
        return self.pipelines.entries()

    def reset(self) -> None:
        self.pipelines.clear()
        self.components.clear()
        self.prepared_inputs.clear()
        self.encoded_inputs.clear()
        _release_memory()


ENGINE = EngineState()


def keep_recent(store: "OrderedDict", key: Any, value: Any, limit: int) -> None:
    """Store `value` under `key`, dropping the oldest entries beyond `limit`."""
    store[key] = value
    while len(store) > limit:
        store.popitem(last=False)


def _release_memory() -> None:
    gc.collect()
    try:
        import torch
    except ImportError:  # nothing loaded, nothing to free
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
