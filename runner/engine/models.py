"""Loading base pipelines onto a device, once per process (see runner.engine.state)."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import torch
import transformers

# diffusers' import makes transformers warn about torchvision image processors we never use.
_verbosity = transformers.utils.logging.get_verbosity()
transformers.utils.logging.set_verbosity_error()
import diffusers  # noqa: E402
from diffusers import DiffusionPipeline  # noqa: E402

transformers.utils.logging.set_verbosity(_verbosity)

from runner import zoo
from runner.engine.state import LoadedPipeline
from runner.errors import UserError
from runner.config.job_plan import JobPlan
from runner.config import sources
from runner.config.sources import Source
from runner.engine.state import ENGINE

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


def resolve_device(requested: str, gpu_count: "int | None" = None) -> str:
    """The torch device for `device.type`. `auto` picks CUDA, then MPS, then CPU; with several CUDA
    GPUs, each process takes one for its lifetime (`cuda:K`, runner.sweep.gpu_slots), so that the workers
    of a launcher spread over the GPUs and each keeps its cached model on one. `gpu_count` stands in
    for torch's count of CUDA GPUs (tests on machines without one)."""
    if requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"device.type={requested!r} but torch sees no CUDA GPU here; use device=cpu or device=auto.")
        if requested == "mps" and not torch.backends.mps.is_available():
            raise UserError("device.type='mps' but MPS is not available here; use device=cpu or device=auto.")
        return requested
    from runner.sweep import gpu_slots

    count = gpu_slots.cuda_gpu_count() if gpu_count is None else gpu_count
    if count > 1:
        slot = gpu_slots.claim(count)
        if gpu_count is None:  # what "cuda" means in this process from now on, too
            torch.cuda.set_device(slot)
        return f"cuda:{slot}"
    if count == 1:
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
    vae_path = plan.vae.path if plan.vae is not None else None
    config_path = plan.config.path if plan.config is not None else None
    key = (plan.base.path, config_path, plan.variant, vae_path, device, str(dtype), plan.memory)
    entry = ENGINE.pipelines.get(key)
    if entry is not None:
        return entry, True
    folder = local_path(plan.base, plan.variant)
    configs = None if plan.config is None else config_location(plan.config)
    with quiet_libraries():
        # A replacement VAE goes in at load time, so that device options and offload hooks cover it.
        vae_folder = None if plan.vae is None else local_path(plan.vae)
        swapped = {} if vae_folder is None else {"vae": _load_vae(vae_folder, plan, dtype, configs)}
        if sources.is_single_file(plan.base):
            pipe = single_file_pipeline(folder, configs, dtype, **swapped, **plan.family.load_options)
        else:
            pipe = DiffusionPipeline.from_pretrained(folder, dtype=dtype, variant=plan.variant,
                                                     use_safetensors=_safetensors_only(plan), **swapped,
                                                     **plan.family.load_options)
    options = dict(plan.memory)
    _place(pipe, device, options)
    # Asked once: diffusers finds a pipeline's device by walking every module (ms, per call).
    entry = LoadedPipeline(pipe=pipe, folder=folder, scheduler_config=pipe.scheduler.config,
                           device=str(pipe._execution_device), dtype=dtype,
                           variant=plan.variant, use_safetensors=_safetensors_only(plan), vae_folder=vae_folder,
                           config_folder=configs if sources.is_single_file(plan.base) else None,
                           compile={k: options[k] for k in ("compile", "compile_backend", "compile_mode")},
                           hotswap_rank=options["lora_hotswap_rank"])
    ENGINE.pipelines.put(key, entry)
    return entry, False


def as_loaded(loaded: LoadedPipeline, component: str) -> Any:
    """The base pipeline's `component` (the UNet, a text encoder) loaded again from its folder as
    `load_pipeline` loaded it, on the CPU: its weights as they were before any LoRA was fused into
    them. Where the files hold the pipeline's dtype they stay memory-mapped, not copied."""
    model_class = type(getattr(loaded.pipe, component))
    with quiet_libraries():
        if loaded.config_folder is not None:  # a single file: read whole again (a fused stack changed)
            pipe = single_file_pipeline(loaded.folder, loaded.config_folder, loaded.dtype, type(loaded.pipe))
            return pipe.components[component]
        return model_class.from_pretrained(loaded.folder, subfolder=component, dtype=loaded.dtype,
                                           variant=loaded.variant, use_safetensors=loaded.use_safetensors)


def config_location(source: Source) -> str:
    """Where a single file's configs are read: a local folder, or a hub id (only its configs are
    downloaded, by diffusers, when online)."""
    if source.origin == "zoo":
        zoo.ensure_zoo()
    return source.path


def single_file_pipeline(file: str, configs: str, dtype: torch.dtype, pipeline_class: Any = None, **components: Any) -> Any:
    """A checkpoint in one file (A1111 / ComfyUI style) loaded with diffusers' `from_single_file`,
    its components' configs read from `configs` (model.config), as the pipeline class there names it."""
    if pipeline_class is None:
        index = Path(configs) / "model_index.json"
        name = json.loads(index.read_text())["_class_name"] if index.is_file() else "StableDiffusionXLPipeline"
        pipeline_class = getattr(diffusers, name)
    return pipeline_class.from_single_file(file, config=configs, local_files_only=_configs_are_local(configs),
                                           dtype=dtype, **components)


def _configs_are_local(configs: str) -> bool:
    return Path(configs).is_dir() or sources.offline()


def _load_vae(folder: str, plan: JobPlan, dtype: torch.dtype, configs: "str | None") -> Any:
    """model.vae: an AutoencoderKL or AutoencoderTiny, by its config's class (runner.config.file_checks);
    a single-file VAE is an AutoencoderKL configured as the base's own VAE."""
    if sources.is_single_file(plan.vae):
        return diffusers.AutoencoderKL.from_single_file(folder, config=configs, subfolder="vae", dtype=dtype,
                                                        local_files_only=_configs_are_local(configs))
    name = json.loads((Path(folder) / "config.json").read_text())["_class_name"]
    return getattr(diffusers, name).from_pretrained(folder, dtype=dtype, use_safetensors=_safetensors_only(plan))


def _place(pipe: Any, device: str, options: Dict[str, Any]) -> None:
    """Put the pipeline on its device, held as the `device` options say."""
    offload = options["cpu_offload"]
    if offload != "none":
        if not device.startswith("cuda"):
            raise UserError(f"device.cpu_offload={offload!r} moves weights between CPU and a CUDA GPU, but this "
                            f"job runs on {device!r}. Use device.cpu_offload=none, or run on a GPU.")
        gpu = torch.device(device).index or 0
        (pipe.enable_model_cpu_offload if offload == "model" else pipe.enable_sequential_cpu_offload)(gpu_id=gpu)
    else:
        pipe.to(device)
    if options["channels_last"]:
        hold_channels_last(pipe.unet, pipe.vae)
    if options["vae_slicing"]:
        pipe.vae.enable_slicing()
    if options["vae_tiling"]:
        pipe.vae.enable_tiling()


def hold_channels_last(*models: Any) -> None:
    """device.channels_last: the convolution networks' weights (and so their activations) in
    channels-last memory format, which oneDNN runs faster on a CPU and cuDNN prefers for
    half-precision convolutions (figures: docs/performance.md). The same arithmetic in another
    order: pixels within one level."""
    for model in models:
        model.to(memory_format=torch.channels_last)


def compile_unet(loaded: LoadedPipeline) -> bool:
    """device.compile, once per loaded pipeline, after its first LoRA stack is in place (compiling
    before peft injects its layers would trace a graph that the first LoRA load invalidates).
    Returns whether it compiled now. Later jobs that change seeds, prompts, LoRA weights (fused or
    live) reuse the compiled graphs; a new adapter or LoRA file changes the UNet's layers and
    recompiles (tests/test_device_options.py counts the graphs)."""
    options = loaded.compile
    if loaded.compiled or options.get("compile", "none") == "none":
        return False
    keywords = {"fullgraph": True, "backend": options["compile_backend"]}
    if options["compile_mode"]:
        keywords["mode"] = options["compile_mode"]
    if options["compile"] == "regional":  # the repeated transformer blocks: the same graph, compiled once
        loaded.pipe.unet.compile_repeated_blocks(**keywords)
    else:
        loaded.pipe.unet.compile(**keywords)
    loaded.compiled = True
    return True


def _safetensors_only(plan: JobPlan):
    """Refuse pickle weights, which can run code when loaded, unless the user allowed them."""
    return None if plan.allow_pickle else True


_COMPONENT_CLASSES = {"controlnet": "ControlNetModel", "adapter": "T2IAdapter"}


def load_conditioning_model(plan: JobPlan) -> Tuple[Any, str, bool]:
    """The ControlNet / T2I-Adapter of a plan (model, local folder, cache hit), loaded once."""
    cond = plan.conditioning
    device = resolve_device(plan.device)
    dtype = resolve_dtype(plan.dtype, device)
    channels_last = dict(plan.memory)["channels_last"]
    key = (cond.component, cond.model.path, cond.model_variant, device, str(dtype), channels_last)
    cached = ENGINE.components.get(key)
    if cached is not None:
        return cached[0], cached[1], True
    folder = local_path(cond.model, cond.model_variant)
    model_class = getattr(diffusers, _COMPONENT_CLASSES[cond.component])
    with quiet_libraries():
        model = model_class.from_pretrained(folder, dtype=dtype, variant=cond.model_variant,
                                            use_safetensors=_safetensors_only(plan))
    model.to(device)
    if channels_last:  # a ControlNet is the UNet's encoder; a T2I-Adapter, convolutions too
        hold_channels_last(model)
    ENGINE.components.put(key, (model, folder))
    return model, folder, False


def pipeline_for(loaded: LoadedPipeline, plan: JobPlan, extra: Dict[str, Any]) -> Any:
    """The pipeline class the conditioning kind needs, sharing the loaded base's components
    (`from_pipe`), so that switching kinds never reloads the base."""
    wanted = plan.conditioning.pipeline  # the family's class for the kind; the kind checked while planning
    if type(loaded.pipe).__name__ == wanted and not extra:
        return loaded.pipe
    variant = loaded.variants.get(wanted)  # one per kind, rebuilt when its extra model changes
    if variant is None or any(getattr(variant, name) is not model for name, model in extra.items()):
        with quiet_libraries():
            variant = getattr(diffusers, wanted).from_pipe(loaded.pipe, **extra)
        loaded.variants[wanted] = variant
    return variant
