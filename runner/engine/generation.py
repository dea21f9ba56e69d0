"""The pipeline call of a job: prompts as their cached embeddings, one CPU generator per image
(seed + i), the NaN / black-image guard, and batches of jobs that differ only in seed or prompt
(runner.sweep.batching): one call for the whole group, each job's images handed to it.

Prompt embeddings are computed once per prompt, not once per job: a sweep over steps, guidance,
seeds or conditioning scales encodes the same prompt with the same two text encoders every job; the
result is kept with the loaded pipeline and handed to the pipeline as `prompt_embeds` & co, which it
uses exactly as if it had encoded the prompt itself."""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from runner.config.job_plan import JobPlan
from runner.engine import decoding, prompts
from runner.engine.lora import text_encoder_adapters
from runner.engine.state import LoadedPipeline
from runner.sweep import batching
from runner.sweep.handoff import HANDOFF

log = logging.getLogger("lcm-run")
_TEXT = prompts.ENCODING_KEYS
MAX_KEPT = 64  # distinct prompts kept per loaded pipeline


def generate(loaded: LoadedPipeline, pipe: Any, plan: JobPlan, record: Dict[str, Any],
             images_in: Dict[str, Any]) -> np.ndarray:
    """This job's images as floats in [0, 1] (output_type="np")."""
    ready = batching.take_ready(record["id"])
    if ready is not None:  # made by the call of an earlier job of this batch
        record.update(ready.info)
        return ready.images
    members = batching.members_led_by(record["id"])
    if members:
        identities = [HANDOFF.identity_of(cfg) for cfg in members]
        plans = [plan if identity == record["id"] else HANDOFF.plan_of(cfg) for identity, cfg in zip(identities, members)]
        try:
            return _batched(loaded, pipe, plans, identities, record, images_in,
                            [batching.call_values(cfg) for cfg in members])
        except torch.OutOfMemoryError:
            log.warning("a batch of %d jobs ran out of memory: generating them one by one", len(members))
            torch.cuda.empty_cache()
        except _UnequalPrompts:  # compel's long prompts: padding one to the other's length would change it
            log.info("the %d jobs of a batch encode their prompts to different lengths: generating them one by one",
                     len(members))
    texts, hit = cached_embeddings(loaded, pipe, plan)
    keywords = {k: v for k, v in plan.call.items() if k not in _TEXT}
    arrays, record["guards"] = _call(pipe, keywords, texts, plan.seeds, images_in)
    record["prompt_embeddings"] = "cached" if hit else "encoded"
    return arrays


def _batched(loaded: LoadedPipeline, pipe: Any, plans: Sequence[JobPlan], identities: Sequence[str],
             record: Dict[str, Any], images_in: Dict[str, Any], member_values: List[Dict[str, Any]]) -> np.ndarray:
    """One call for every image of the group: each job's embeddings repeated once per image. The
    record lists the members (seed and prompts, in the call's order): lcm-reproduce remakes the call."""
    rows: Dict[str, List[torch.Tensor]] = {}
    for plan in plans:
        texts, _ = cached_embeddings(loaded, pipe, plan)
        for name, tensor in texts.items():
            rows.setdefault(name, []).append(tensor.repeat(len(plan.seeds), *([1] * (tensor.dim() - 1))))
    if any(len({part.shape[1:] for part in parts}) > 1 for parts in rows.values()):
        raise _UnequalPrompts()
    texts = {name: torch.cat(parts) for name, parts in rows.items()}
    keywords = {k: v for k, v in plans[0].call.items() if k not in _TEXT + ("num_images_per_prompt",)}
    seeds = [seed for plan in plans for seed in plan.seeds]
    # On a CPU each job's images are decoded on their own, as the job alone would: measured faster
    # there than one decode of the batch (docs/performance.md). On a GPU the batch stays whole.
    parts = [len(plan.seeds) for plan in plans] if loaded.device == "cpu" else None
    arrays, checks = _call(pipe, keywords, texts, seeds, images_in, parts)
    info = {"batch": {"leader": record["id"], "jobs": len(plans), "images": len(seeds),
                      "decoded": "per job" if parts else "whole", "members": member_values}, "guards": checks,
            "prompt_embeddings": "cached"}
    start = 0
    for plan, identity in zip(plans, identities):
        own = arrays[start:start + len(plan.seeds)]
        start += len(plan.seeds)
        if identity == record["id"]:
            record.update(info)
            mine = own
        else:  # a member already complete (resumed sweep) never collects its share: no harm
            batching.put_ready(identity, batching.Ready(own, info))
    return mine


class _UnequalPrompts(Exception):
    """A batch's prompts encode to embeddings of different lengths (compel's chunks of 77 tokens)."""


def _call(pipe: Any, keywords: Dict[str, Any], texts: Dict[str, Any], seeds: Sequence[int],
          images_in: Dict[str, Any], decode_parts: Optional[Sequence[int]] = None):
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    # entered last, the guard wraps the parts: it keeps the whole batch's latents, for its float32 retry
    with decoding.decoded_in_parts(pipe.vae, decode_parts), decoding.watch_decode(pipe.vae) as decoded:
        arrays = pipe(**keywords, **texts, **images_in, generator=generators, output_type="np").images
    return decoding.checked_images(pipe, arrays, decoded.get("latents"))


def cached_embeddings(loaded: LoadedPipeline, pipe: Any, plan: JobPlan) -> Tuple[Dict[str, Any], bool]:
    """Pipeline keywords replacing the prompts (runner.engine.prompts), and whether they were cached."""
    call, adapters = plan.call, plan.adapters
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
    key = (tuple(call.get(name) for name in _TEXT), plan.prompt_syntax, do_cfg, lora_state)
    hit = key in loaded.prompt_embeddings
    if not hit:
        if len(loaded.prompt_embeddings) >= MAX_KEPT:
            loaded.prompt_embeddings.pop(next(iter(loaded.prompt_embeddings)))
        loaded.prompt_embeddings[key] = prompts.encode(pipe, call, plan.prompt_syntax, do_cfg, lora_scale, loaded.device,
                                                       pooled=plan.family.pooled)
    # by the family's encode_prompt outputs (SDXL's two encoders add pooled embeddings; SD 1.5's one none)
    keywords = {name: tensor for name, tensor in zip(plan.family.prompt_outputs, loaded.prompt_embeddings[key])
                if do_cfg or not name.startswith("negative_")}
    return keywords, hit
