"""The sampling knobs beyond the model card (eta, CLIP skip, guidance rescale, SDXL's second prompts,
prompt syntax, LCM's original_inference_steps, image-to-image strength), checked before any load.

Torch-free: which schedulers take `eta` is a table here, not a look at diffusers; a test
(tests/test_knobs.py) checks the table against diffusers' own `step` signatures.
"""
from __future__ import annotations

import importlib.util
import math
from typing import Any, Dict, Iterator, Optional

from omegaconf import DictConfig

# Every diffusers scheduler whose `step` takes `eta` (TCD's gamma, DDIM's eta). A pipeline passes
# `eta` only to these; to any other it would be silently ignored, so setting it there is refused.
TAKES_ETA = frozenset({
    "TCDScheduler", "DDIMScheduler", "DDIMParallelScheduler", "CogVideoXDDIMScheduler", "CogVideoXDPMScheduler",
})
# Schedulers that draw their few steps from an `original_inference_steps`-long schedule.
ORIGINAL_STEPS = ("LCMScheduler", "TCDScheduler")
SYNTAXES = ("plain", "compel")
# The sampling keys passed to the pipeline by diffusers' own names, when set.
PIPELINE_KEYS = ("prompt_2", "negative_prompt_2", "eta", "clip_skip", "guidance_rescale")


def scheduler_class(scheduler: DictConfig) -> Optional[str]:
    """`EulerDiscreteScheduler` for `_target_: diffusers.EulerDiscreteScheduler.from_config`."""
    target = scheduler.get("_target_")
    if not isinstance(target, str) or target.count(".") != 2:
        return None
    return target.split(".")[1]


def call_keywords(sampling: DictConfig) -> Dict[str, Any]:
    """The knobs that are set, as pipeline keywords."""
    found = {}
    for key in PIPELINE_KEYS:
        value = sampling[key]
        if value is not None:
            found[key] = float(value) if key in ("eta", "guidance_rescale") else value
    return found


def problems(cfg: DictConfig) -> Iterator[str]:
    s = cfg.sampling
    scheduler = scheduler_class(cfg.scheduler)
    for key in ("eta", "guidance_rescale"):
        value = s[key]
        if value is not None and (not math.isfinite(value) or not 0 <= value <= 1):
            yield f"sampling.{key}={value} must be between 0 and 1 (or null: the pipeline's default)"
    if s.eta is not None and scheduler is not None and scheduler not in TAKES_ETA:
        yield (f"sampling.eta={s.eta} is not used by {scheduler} (its step takes no eta), so it would change "
               f"nothing; eta is for {', '.join(sorted(TAKES_ETA - {'CogVideoXDDIMScheduler', 'CogVideoXDPMScheduler'}))}: "
               "choose scheduler=tcd (with lora=tcd) or scheduler=ddim, or drop it with sampling.eta=null")
    if s.clip_skip is not None and s.clip_skip < 1:
        yield (f"sampling.clip_skip={s.clip_skip} must be at least 1 (layers skipped from the end of CLIP), "
               "or null for the model's default layer")
    if s.prompt_syntax not in SYNTAXES:
        yield f"sampling.prompt_syntax={s.prompt_syntax!r} is not one of {', '.join(SYNTAXES)}"
    elif s.prompt_syntax == "compel":
        if s.clip_skip is not None:
            yield (f"sampling.clip_skip={s.clip_skip} cannot be used with sampling.prompt_syntax=compel: compel "
                   "reads a fixed layer of each text encoder (SDXL's penultimate); drop sampling.clip_skip or use "
                   "sampling.prompt_syntax=plain")
        if importlib.util.find_spec("compel") is None:
            yield ("sampling.prompt_syntax=compel needs the compel package, which is not installed: "
                   "pip install -e \".[compel]\" (or pip install compel)")
    original = cfg.scheduler.get("original_inference_steps")
    if original is not None:
        if not isinstance(original, int) or isinstance(original, bool) or not 1 <= original <= 1000:
            yield (f"scheduler.original_inference_steps={original!r} must be a whole number from 1 to 1000 "
                   "(the training schedule's steps: 50 for LCM-LoRA and TCD)")
        elif scheduler in ORIGINAL_STEPS and s.steps > original:
            yield (f"sampling.steps={s.steps} is more than scheduler.original_inference_steps={original}: "
                   f"{scheduler} picks its steps from that schedule; lower sampling.steps or raise it")
    strength = cfg.conditioning.get("strength")
    if isinstance(strength, (int, float)) and 0 < strength <= 1 and int(s.steps * strength) < 1:
        yield (f"conditioning.strength={strength} with sampling.steps={s.steps} runs no denoising step "
               f"(int({s.steps} x {strength}) = 0); raise the strength to at least {1 / s.steps:g} "
               f"or sampling.steps to at least {math.ceil(1 / strength)}")
