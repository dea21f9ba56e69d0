"""What every image says about itself: AUTOMATIC1111's `parameters` text, and the full record.

The `parameters` text follows the format AUTOMATIC1111's webui writes (prompt, `Negative prompt:`,
then `Key: value, …`), so the tools that read its images read ours. The `lcm-runner` record holds the
fully resolved config as JSON, which `lcm-reproduce` reads back. A PNG keeps both in text chunks; a
WebP or JPEG in its EXIF block (runner.outputs.exif_metadata). `read_image_metadata(path)` reads
both back (the A1111 `parameters` text parsed the way AUTOMATIC1111's webui parses it).
"""
from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Union

from runner.errors import UserError

PARAMETERS_KEY = "parameters"
RECORD_KEY = "lcm-runner"

# AUTOMATIC1111's own pattern for the `Key: value, ...` line (modules/infotext_utils.py).
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")

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
        ("Size", "{}x{}".format(*record.get("size") or (call["width"], call["height"]))),  # img2img: no size in call
    ]
    hashes = record.get("hashes") or {}  # runner.outputs.model_hashes: A1111's, where a file was loaded
    if "model" in hashes:
        fields.append(("Model hash", hashes["model"]))
    fields.append(("Model", PurePosixPath(config["model"]["source"]).name))
    if "vae" in hashes:
        fields += [("VAE hash", hashes["vae"]), ("VAE", PurePosixPath(str(config["model"].get("vae"))).name)]
    if record.get("adapters"):
        weights = ", ".join(f"{a['name']}: {a['weight']}" for a in record["adapters"])
        fields += [("Lora", weights), ("Lora fused", record.get("fused", False))]
    if hashes.get("lora"):
        fields.append(("Lora hashes", ", ".join(f"{name}: {h}" for name, h in hashes["lora"].items())))
    if "strength" in call:
        fields.append(("Denoising strength", call["strength"]))
    if call.get("clip_skip") is not None:
        fields.append(("Clip skip", a1111_clip_skip(call["clip_skip"], record.get("pipeline") or "")))
    if call.get("eta") is not None:
        fields.append(("Eta", call["eta"]))
    for key in ("controlnet_conditioning_scale", "adapter_conditioning_scale"):
        if key in call:
            fields.append((key.replace("_", " ").capitalize(), call[key]))
    fields.append(("Version", f"lcm-runner {record.get('versions', {}).get('lcm-runner', '')}".strip()))
    lines.append(", ".join(f"{key}: {_quoted(value)}" for key, value in fields))
    return "\n".join(lines)


def a1111_clip_skip(clip_skip: int, pipeline: str) -> int:
    """A1111 counts CLIP layers from the end, 1 being the last: diffusers' clip_skip=1 reads the
    penultimate (A1111's 2) on SD 1.5, and one below the penultimate (3) on SDXL, whose default is
    the penultimate (A1111's 2 with its "sdxl_clip_l_skip" option)."""
    return clip_skip + (2 if "XL" in pipeline else 1)


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


def read_image_metadata(path: Union[str, Path]) -> Dict[str, Any]:
    """Both metadata texts of an image (PNG, WebP or JPEG) written by lcm-run.

    Returns `{"parameters": <A1111 text parsed, or None>, "lcm-runner": <the JSON record, or None>,
    "text": <the raw texts: a PNG's every text chunk, a WebP's or JPEG's two EXIF texts>}`. Raises
    UserError when the file is missing, is not one of those formats, or its `lcm-runner` record is
    not a JSON object.
    """
    path = Path(path)
    text = _image_texts(path)
    parameters = text.get(PARAMETERS_KEY)
    record = text.get(RECORD_KEY)
    if record is not None:
        try:
            record = json.loads(record)
        except (ValueError, RecursionError):
            record = None
            raise UserError(
                f"{path} has lcm-runner metadata that is not valid JSON: the file was damaged or "
                "edited. Reproduce from an untouched image of the job, or re-run the job from its run.json."
            ) from None
        if not isinstance(record, dict):
            raise UserError(f"{path}: its lcm-runner metadata is not a JSON object, so it was not written "
                            "by lcm-run (or was edited). Use an untouched image of the job.")
    return {
        PARAMETERS_KEY: None if parameters is None else parse_parameters(parameters),
        RECORD_KEY: record,
        "text": text,
    }


def parse_parameters(text: str) -> Dict[str, str]:
    """AUTOMATIC1111's `parse_generation_parameters`, without its webui-specific defaults.

    The prompt is every line before `Negative prompt:` (or before the last line), the negative
    prompt the lines from there to the last line, and the last line `Key: value, ...` pairs matched
    with A1111's own regex; values in double quotes are unquoted with json.loads. All values stay
    strings, as in A1111; a `WxH` value is also split into `Key-1` and `Key-2` as A1111 does.
    """
    *lines, last = text.strip().split("\n")
    if len(RE_PARAM.findall(last)) < 3:  # A1111: not a parameters line, so part of the prompt
        lines.append(last)
        last = ""
    prompt: List[str] = []
    negative: List[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    parsed = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in RE_PARAM.findall(last):
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                pass
        size = RE_IMAGESIZE.match(value)
        if size is not None:
            parsed[f"{key}-1"], parsed[f"{key}-2"] = size.groups()
        parsed[key] = value
    return parsed


read_png_metadata = read_image_metadata  # its name from when every image was a PNG

READABLE = ("PNG", "WEBP", "JPEG")  # the formats lcm-run writes (outputs.format)
WRITTEN_BY_US = "an image written by lcm-run (image_NN_seedS.png, .webp or .jpg in a job folder)"


def _image_texts(path: Path) -> Dict[str, str]:
    from PIL import Image, UnidentifiedImageError

    from runner.outputs import exif_metadata

    if not path.exists():
        raise UserError(f"{path} does not exist. Give the path of {WRITTEN_BY_US}.")
    if not path.is_file():
        raise UserError(f"{path} is not a file. Give the path of {WRITTEN_BY_US}, not a folder.")
    try:
        with Image.open(path) as image:
            if image.format not in READABLE:
                raise UserError(
                    f"{path} is a {image.format} image: lcm-run writes PNG, WebP or JPEG, and converting one "
                    "to another format drops its metadata. Reproduce from the original image.")
            if image.format == "PNG":
                return {str(key): str(value) for key, value in image.text.items()}
            return exif_metadata.read_texts(image)
    except UserError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as error:
        reason = "is not an image" if isinstance(error, UnidentifiedImageError) else "is too large to be ours"
        raise UserError(f"{path} {reason}: lcm-reproduce reads {WRITTEN_BY_US}.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise UserError(f"{path} is a damaged image ({error}); its metadata cannot be read. "
                        "Reproduce from an intact copy of the image.") from None
