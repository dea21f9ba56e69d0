"""What every PNG says about itself: AUTOMATIC1111's `parameters` text, and the full record.

The `parameters` chunk follows the format AUTOMATIC1111's webui writes (prompt, `Negative prompt:`,
then `Key: value, …`), so the tools that read those PNGs read ours. The `lcm-runner` chunk holds the
fully resolved config as JSON, which `lcm-reproduce` reads back.
"""
from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any, Dict, List

PARAMETERS_KEY = "parameters"
RECORD_KEY = "lcm-runner"

# AUTOMATIC1111's sampler names for diffusers' scheduler classes.
SAMPLER_NAMES = {
    "LCMScheduler": "LCM",
    "TCDScheduler": "TCD",
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "DDIMScheduler": "DDIM",
}


def parameters_text(record: Dict[str, Any], image: Dict[str, Any]) -> str:
    """The A1111 `parameters` text for one image of a job record."""
    call, config = record["call"], record["config"]
    lines = [call["prompt"]]
    if call.get("negative_prompt"):
        lines.append(f"Negative prompt: {call['negative_prompt']}")
    scheduler = (record.get("scheduler") or {}).get("class", "")
    fields: List[tuple] = [
        ("Steps", call["num_inference_steps"]),
        ("Sampler", SAMPLER_NAMES.get(scheduler, scheduler)),
        ("CFG scale", call["guidance_scale"]),
        ("Seed", image["seed"]),
        ("Size", f"{call['width']}x{call['height']}"),
        ("Model", PurePosixPath(config["model"]["source"]).name),
    ]
    if record.get("adapters"):
        weights = ", ".join(f"{a['name']}: {a['weight']}" for a in record["adapters"])
        fields += [("Lora", weights), ("Lora fused", record.get("fused", False))]
    if "strength" in call:
        fields.append(("Denoising strength", call["strength"]))
    for key in ("controlnet_conditioning_scale", "adapter_conditioning_scale"):
        if key in call:
            fields.append((key.replace("_", " ").capitalize(), call[key]))
    fields.append(("Version", f"lcm-runner {record.get('versions', {}).get('lcm-runner', '')}".strip()))
    lines.append(", ".join(f"{key}: {_quoted(value)}" for key, value in fields))
    return "\n".join(lines)


def record_text(record: Dict[str, Any], image: Dict[str, Any]) -> str:
    """The JSON chunk: the resolved config, overrides, device and versions, which image this is, and
    the call it was made in when that call made other jobs' images too (a sweep's batching)."""
    chunk = {"id": record.get("id"), "config": record["config"], "overrides": record.get("overrides", []),
             "image": image, "device": record.get("device"), "versions": record.get("versions", {})}
    if record.get("batch"):
        chunk["batch"] = record["batch"]
    return json.dumps(chunk, ensure_ascii=False)


def png_info(record: Dict[str, Any], image: Dict[str, Any]):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PARAMETERS_KEY, parameters_text(record, image))
    info.add_text(RECORD_KEY, record_text(record, image))
    return info


def _quoted(value: Any) -> str:
    """A1111 quotes a value that holds a comma or a colon, JSON-style."""
    text = str(value)
    return json.dumps(text) if any(c in text for c in ',:"') else text
