"""Prompt embeddings computed once per prompt, not once per job.

A sweep over steps, guidance, seeds or conditioning scales encodes the same prompt with the same two
text encoders every job; the result is kept with the loaded pipeline and handed to the pipeline as
`prompt_embeds` & co, which it uses exactly as if it had encoded the prompt itself.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

from runner.cache import LoadedPipeline
from runner.lora import text_encoder_adapters

MAX_KEPT = 64  # distinct prompts kept per loaded pipeline


def cached_embeddings(loaded: LoadedPipeline, pipe: Any, call: Dict[str, Any], adapters) -> Tuple[Dict[str, Any], bool]:
    """Pipeline keywords replacing `prompt` / `negative_prompt`, and whether they were cached."""
    do_cfg = call["guidance_scale"] > 1 and pipe.unet.config.time_cond_proj_dim is None
    lora_scale = (call.get("cross_attention_kwargs") or {}).get("scale")
    # Everything that changes what the text encoders compute: text, CFG, and their LoRA layers (which
    # file is loaded under each adapter name: another file may hold other text-encoder layers). A
    # stack with no text-encoder layers (LCM-LoRA, most style LoRAs) leaves them as they are: a
    # LoRA-weight sweep then encodes its prompt once.
    lora_state = ()
    if text_encoder_adapters(pipe) & {a.name for a in adapters}:
        files = tuple((a.name, loaded.adapter_files.get(a.name), a.weight) for a in adapters)
        lora_state = (lora_scale, loaded.fused, loaded.lora_enabled, files)
    key = (call["prompt"], call.get("negative_prompt"), do_cfg, lora_state)
    hit = key in loaded.prompt_embeddings
    if not hit:
        if len(loaded.prompt_embeddings) >= MAX_KEPT:
            loaded.prompt_embeddings.pop(next(iter(loaded.prompt_embeddings)))
        loaded.prompt_embeddings[key] = pipe.encode_prompt(
            prompt=call["prompt"], device=loaded.device, num_images_per_prompt=1,  # asked once, at load
            do_classifier_free_guidance=do_cfg, negative_prompt=call.get("negative_prompt"), lora_scale=lora_scale)
    embeds, negative, pooled, negative_pooled = loaded.prompt_embeddings[key]
    keywords = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
    if do_cfg:
        keywords.update(negative_prompt_embeds=negative, negative_pooled_prompt_embeds=negative_pooled)
    return keywords, hit
