"""A job's prompts as SDXL's embeddings: diffusers' own `encode_prompt` (sampling.prompt_syntax=plain,
with one warning when CLIP will cut a prompt) or compel's (weights, A1111's syntax, prompts past 77
tokens encoded in chunks). Both give what the pipeline takes as `prompt_embeds` & co; the caller
(runner.engine.generation) keeps them per prompt."""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Dict, Iterator, Optional, Tuple

import torch

from runner.engine.models import quiet_libraries
from runner.errors import UserError

log = logging.getLogger("lcm-run")
# The keywords the embeddings replace: the pipeline must not get them beside `prompt_embeds`.
ENCODING_KEYS = ("prompt", "negative_prompt", "prompt_2", "negative_prompt_2", "clip_skip")


def encode(pipe: Any, call: Dict[str, Any], syntax: str, do_cfg: bool, lora_scale: Optional[float],
           device: str, pooled: bool = True) -> Tuple[Any, ...]:
    """(prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds),
    as `pipe.encode_prompt` returns them; without `pooled` (one text encoder, Stable Diffusion 1.5)
    the first two."""
    if syntax == "compel":
        return _compel(pipe, call, do_cfg, lora_scale, device)
    clip_skip = call.get("clip_skip")
    if clip_skip is not None:
        _check_clip_skip(pipe, clip_skip)
    _warn_if_cut(pipe, call, do_cfg)
    if not pooled:
        with quiet_libraries():
            return pipe.encode_prompt(
                prompt=call["prompt"], device=device, num_images_per_prompt=1, do_classifier_free_guidance=do_cfg,
                negative_prompt=call.get("negative_prompt"), lora_scale=lora_scale, clip_skip=clip_skip)
    with quiet_libraries():  # diffusers' own truncation notice: said once, above, with its remedy
        return pipe.encode_prompt(
            prompt=call["prompt"], prompt_2=call.get("prompt_2"), device=device, num_images_per_prompt=1,
            do_classifier_free_guidance=do_cfg, negative_prompt=call.get("negative_prompt"),
            negative_prompt_2=call.get("negative_prompt_2"), lora_scale=lora_scale, clip_skip=clip_skip)


def _compel(pipe: Any, call: Dict[str, Any], do_cfg: bool, lora_scale: Optional[float], device: str):
    from compel import CompelForSDXL

    from runner.config.prompt_syntax import a1111_to_compel

    def text(key: str) -> Optional[str]:
        value = call.get(key)
        return a1111_to_compel(value) if value else None  # an empty prompt_2 means `prompt`, as in diffusers

    negative = call.get("negative_prompt")
    zeros = do_cfg and negative is None and pipe.config.force_zeros_for_empty_prompt  # as encode_prompt does
    with_negative = do_cfg and not zeros
    prompts = {"main_prompt": text("prompt"), "style_prompt": text("prompt_2"),
               "negative_prompt": (text("negative_prompt") or "") if with_negative else None,
               "negative_style_prompt": text("negative_prompt_2") if with_negative else None}
    with _text_encoder_lora_scale(pipe, lora_scale), torch.no_grad():
        # CompelForSDXL: both encoders' penultimate hidden states (not normalised), the second's pooled
        # output, prompts past 77 tokens in chunks (truncate_long_prompts=False), every conditioning
        # padded to one length.
        compel = CompelForSDXL(pipe, device=device)
        made = compel(**prompts)
        # compel pools the text as written, weighting syntax included, so that `(cat)1` would pool other
        # tokens than `cat`: the pooled embeddings are made from the words alone.
        pooled_of = compel.compel_2.conditioning_provider.get_pooled_embeddings
        pooled = pooled_of([_words(prompts["style_prompt"] or prompts["main_prompt"])], device=device)
        if with_negative:
            negative_pooled = pooled_of([_words(prompts["negative_style_prompt"] or prompts["negative_prompt"])],
                                        device=device)
    dtype = pipe.text_encoder_2.dtype  # compel's weights are float32: keep a float16 model's embeddings float16
    embeds, pooled = made.embeds.to(dtype), pooled.to(dtype)
    if zeros:
        return embeds, torch.zeros_like(embeds), pooled, torch.zeros_like(pooled)
    if not with_negative:
        return embeds, None, pooled, None
    return embeds, made.negative_embeds.to(dtype), pooled, negative_pooled.to(dtype)


def _words(text: str) -> str:
    """A compel prompt's words without its weights (`a (cat)1.5 on a mat` -> `a cat on a mat`); a
    blend or conjunction as written."""
    from compel import Compel

    parsed = Compel.parse_prompt_string(text)
    if len(parsed.prompts) != 1 or not all(hasattr(part, "text") for part in getattr(parsed.prompts[0], "children", [None])):
        return text
    return " ".join(part.text for part in parsed.prompts[0].children if part.text)


@contextlib.contextmanager
def _text_encoder_lora_scale(pipe: Any, scale: Optional[float]) -> Iterator[None]:
    """cross_attention_kwargs' scale on the text encoders' LoRA layers, as encode_prompt applies it."""
    from diffusers.utils import scale_lora_layers, unscale_lora_layers

    encoders = [e for e in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if e is not None] if scale is not None else []
    for encoder in encoders:
        scale_lora_layers(encoder, scale)
    try:
        yield
    finally:
        for encoder in encoders:
            unscale_lora_layers(encoder, scale)


def _check_clip_skip(pipe: Any, clip_skip: int) -> None:
    encoders = [e for e in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if e is not None]
    layers = min(e.config.num_hidden_layers for e in encoders)
    most = layers - 1 if getattr(pipe, "text_encoder_2", None) is not None else layers  # SDXL counts from the penultimate layer
    if clip_skip > most:
        raise UserError(f"sampling.clip_skip={clip_skip} skips more layers than this model's text encoders have "
                        f"({layers}): give at most {most}, or null for the model's default layer.")


def _warn_if_cut(pipe: Any, call: Dict[str, Any], do_cfg: bool) -> None:
    """One warning naming every prompt CLIP will cut at 77 tokens, how many tokens go, and the option
    that keeps them."""
    keys = ("prompt", "prompt_2") + (("negative_prompt", "negative_prompt_2") if do_cfg else ())
    cut = []
    for key in keys:
        text = call.get(key)
        tokenizer = getattr(pipe, "tokenizer_2", None) if key.endswith("_2") else pipe.tokenizer
        if not text or tokenizer is None:
            continue
        ids = tokenizer(text).input_ids
        dropped = len(ids) - tokenizer.model_max_length
        if dropped > 0:
            tail = tokenizer.decode(ids[tokenizer.model_max_length - 1:-1])
            cut.append(f"sampling.{key} is {len(ids)} tokens long, so its last {dropped} tokens are dropped "
                       f"({tail!r})")
    if cut:
        log.warning("CLIP reads %d tokens of a prompt: %s. sampling.prompt_syntax=compel keeps them (it encodes a "
                    "long prompt in chunks of %d tokens).", pipe.tokenizer.model_max_length, "; ".join(cut),
                    pipe.tokenizer.model_max_length)
