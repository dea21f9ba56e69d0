"""From a composed config to a job plan: what to load and what to call, validated up front.

Torch-free: every check that can fail on bad input happens here, before any model loads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple


from pathlib import Path

from runner.config import families, file_checks, knobs, models_root, sources
from runner.config.conditioning import ConditioningPlan, plan_conditioning
from runner.config.metrics import MetricPlan, plan_metrics
from runner.config.plain import Plain, as_plain, to_builtin
from runner.config.prompt_sets import PromptRow, row_of_config
from runner.config.schema import validate
from runner.config.sources import Source
from runner.errors import UserError


# Device options that change how a loaded pipeline is held: part of its cache key.
MEMORY_OPTIONS = ("channels_last", "vae_slicing", "vae_tiling", "cpu_offload", "compile", "compile_backend",
                  "compile_mode", "lora_hotswap_rank")


@dataclass(frozen=True)
class AdapterPlan:
    name: str  # adapter name in the pipeline (the key under `lora`)
    source: Source
    weight: float


@dataclass(frozen=True)
class JobPlan:
    base: Source
    variant: Optional[str]
    vae: Optional[Source]  # a VAE replacing the model's own (model.vae)
    device: str
    dtype: str
    memory: Tuple[Tuple[str, Any], ...]  # device options that change how the pipeline is held
    scheduler: Dict[str, Any]  # `_target_`, `_partial_` and keyword overrides
    adapters: Tuple[AdapterPlan, ...]
    fuse_lora: bool
    allow_pickle: bool
    conditioning: ConditioningPlan
    call: Dict[str, Any]  # pipeline keywords by diffusers' names, without images or generators
    seeds: Tuple[int, ...]
    size: Tuple[int, int]  # (width, height) of the images: img2img's call has no height/width, its image has this size
    prompt_row: Optional[PromptRow] = None  # the prompt set's row this job draws (prompts=file|builtin)
    metrics: Tuple[MetricPlan, ...] = ()  # the scores each image gets
    config: Optional[Source] = None  # where a single-file base (or VAE) reads its configs (model.config)
    family: families.Family = families.SDXL  # the base's, read from its files (runner.config.families)
    prompt_syntax: str = "plain"  # how the prompts are read: plain (diffusers) | compel (runner.engine.prompts)

    @property
    def components(self) -> Dict[str, Source]:
        """Every model folder the job loads, keyed as in run.json."""
        found = {"base": self.base}
        if self.vae is not None:
            found["vae"] = self.vae
        if self.conditioning.component:
            found[self.conditioning.component] = self.conditioning.model
        found.update((metric.name, metric.model) for metric in self.metrics if metric.model is not None)
        return found


def plan_job(cfg: Any) -> JobPlan:
    """The plan of the job `cfg` describes: a DictConfig, or its values as Plain data."""
    cfg = as_plain(cfg)  # read once; every check below reads plain data
    validate(cfg)
    twins = dict(cfg.zoo.twins) if cfg.zoo.name == "tiny" else {}
    names = models_root.models_root_of(cfg)
    base, config = _plan_base(cfg, twins, names)
    model = families.read_base(config if config is not None else base)  # a single file: its configs' folder
    vae = None
    if cfg.model.vae is not None:
        vae = sources.resolve_folder("model.vae", models_root.resolve_name(names, "model.vae", cfg.model.vae), twins)
        if sources.is_single_file(vae):
            file_checks.check_checkpoint_file("model.vae", Path(vae.path), cfg.allow_pickle, "", "a VAE")
            config = config or _configs_of(cfg, base, twins)
        elif vae.origin == "local":
            file_checks.check_vae_folder("model.vae", Path(vae.path), cfg.allow_pickle)
    adapters = tuple(_plan_adapter(name, entry, twins, cfg.allow_pickle, model, cfg.model.source, names)
                     for name, entry in cfg.lora.items())
    conditioning = plan_conditioning(cfg.conditioning, twins, cfg.allow_pickle, names, model, cfg.model.source)
    s = cfg.sampling
    _check_one_encoder(s, model, cfg.model.source)
    call: Dict[str, Any] = {"prompt": s.prompt}
    if s.negative_prompt is not None:
        call["negative_prompt"] = s.negative_prompt
    height = model.default_size if s.height is None else s.height  # null: the base's own size
    width = model.default_size if s.width is None else s.width
    call.update(num_inference_steps=s.steps, guidance_scale=float(s.guidance_scale))
    if conditioning.kind != "img2img":  # its pipeline takes the size of its image
        call.update(height=height, width=width)
    call["num_images_per_prompt"] = s.num_images
    call.update(conditioning.call)
    call.update(knobs.call_keywords(s))
    if cfg.lora_scale is not None:
        call["cross_attention_kwargs"] = {"scale": float(cfg.lora_scale)}
    return JobPlan(
        base=base,
        variant=sources.variant_for(base, cfg.model.variant),
        config=config,
        vae=vae,
        device=cfg.device.type,
        dtype=cfg.device.dtype,
        memory=tuple((key, cfg.device[key]) for key in MEMORY_OPTIONS),
        scheduler=to_builtin(cfg.scheduler),
        adapters=adapters,
        fuse_lora=bool(cfg.fuse_lora) and bool(adapters),
        allow_pickle=bool(cfg.allow_pickle),
        conditioning=conditioning,
        call=call,
        seeds=tuple(s.seed + i for i in range(s.num_images)),
        size=(width, height),
        prompt_row=row_of_config(cfg) if cfg.prompts.kind != "none" else None,
        metrics=plan_metrics(cfg.metrics, conditioning.kind, twins),
        family=model.family,
        prompt_syntax=s.prompt_syntax,
    )


def _check_one_encoder(s: Plain, model: families.BaseModel, ref: str) -> None:
    """A base with one text encoder (Stable Diffusion 1.5) has no second prompt, and compel's SDXL
    encoding does not apply to it."""
    if model.family.text_encoders > 1:
        return
    for key in ("prompt_2", "negative_prompt_2"):
        if s.get(key) is not None:
            raise UserError(f"sampling.{key} is set, but {model.family.label} (model.source={ref!r}) has one text "
                            f"encoder, so there is no second prompt: drop sampling.{key}.")
    if s.prompt_syntax == "compel":
        raise UserError(f"sampling.prompt_syntax=compel encodes for SDXL's two text encoders; {model.family.label} "
                        f"(model.source={ref!r}) has one. Use sampling.prompt_syntax=plain with this base.")


def _plan_base(cfg: Plain, twins, names) -> Tuple[Source, Optional[Source]]:
    """The base model: a diffusers folder (its variant files checked), or a single-file checkpoint
    and the folder its configs come from (model.config)."""
    base = sources.resolve_folder("model.source", models_root.resolve_name(names, "model.source", cfg.model.source),
                                  twins)
    if sources.is_single_file(base):
        file_checks.check_checkpoint_file("model.source", Path(base.path), cfg.allow_pickle,
                                          "model.diffusion_model.", "a single-file Stable Diffusion checkpoint")
        return base, _configs_of(cfg, base, twins)
    if base.origin == "local":
        file_checks.check_model_folder("model.source", Path(base.path), cfg.allow_pickle, pipeline=True)
        file_checks.check_variant_files("model.source", base.ref, Path(base.path), cfg.model.variant)
    return base, None


def _configs_of(cfg: Plain, base: Source, twins) -> Source:
    """model.config: the diffusers folder (or cached repo) whose configs a single file is read with;
    for a single-file VAE on a folder base, the base itself."""
    if not sources.is_single_file(base):
        return base
    if cfg.model.get("config") is None:
        raise UserError(f"model.source={cfg.model.source!r} is a single file, which holds weights but no "
                        "configs: set model.config to a diffusers folder or hub id of the same architecture "
                        "(model.config=stabilityai/stable-diffusion-xl-base-1.0 for SDXL).")
    config = sources.resolve_folder("model.config", cfg.model.config, twins)
    if config.origin == "local":
        file_checks.check_model_folder("model.config", Path(config.path), True, pipeline=True)
    return config


def _plan_adapter(name: str, entry: Plain, twins, allow_pickle: bool, base: families.BaseModel,
                  base_ref: str, names=None) -> AdapterPlan:
    key = f"lora.{name}.source"
    source = sources.resolve_file(key, models_root.resolve_name(names, key, entry.source), entry.weight_name, twins)
    if families.on_disk(source):  # a twin's file once the zoo is built
        keys = file_checks.check_lora_file(key, Path(source.file), allow_pickle)
        families.check_lora_family(key, Path(source.file), keys, base, base_ref)
    return AdapterPlan(name=name, source=source, weight=float(entry.weight))
