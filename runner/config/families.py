"""Model families (SDXL, SSD-1B, Stable Diffusion 1.5), read from a base's own files.

Torch-free: the family is read from the base's `model_index.json` and `unet/config.json` while
planning, and decides the pipeline class of each conditioning kind, the default size, how prompts are
encoded, and which LoRA files, ControlNets and T2I-Adapters fit — so that a LoRA or a conditioning
model of another family is refused before anything loads. LoRA files and conditioning models are
judged from their safetensors header and config.json alone.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Tuple

from runner import zoo
from runner.config.sources import Source
from runner.errors import UserError

_SDXL_PIPELINES = {
    "none": "StableDiffusionXLPipeline",
    "inpaint": "StableDiffusionXLInpaintPipeline",
    "img2img": "StableDiffusionXLImg2ImgPipeline",
    "controlnet_canny": "StableDiffusionXLControlNetPipeline",
    "t2i_adapter_canny": "StableDiffusionXLAdapterPipeline",
}
# What encode_prompt returns, in order: SDXL's two encoders add pooled embeddings.
_POOLED = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")


@dataclass(frozen=True)
class Family:
    name: str  # as in the config options (model=ssd_1b)
    label: str  # as people name it
    pipelines: Mapping[str, str]  # conditioning kind -> diffusers pipeline class
    prompt_outputs: Tuple[str, ...]  # encode_prompt's outputs, by the pipeline's keyword names
    text_encoders: int
    shape: str  # "xl" or "sd": which LoRAs, ControlNets and T2I-Adapters have the layers this UNet has
    lcm_lora: str  # the lora option of its LCM-LoRA, for messages
    size: int  # its trained size, where a UNet config gives none
    load_options: Mapping[str, object] = field(default_factory=dict)  # from_pretrained keywords

    @property
    def pooled(self) -> bool:
        return "pooled_prompt_embeds" in self.prompt_outputs


SDXL = Family("sdxl", "SDXL", _SDXL_PIPELINES, _POOLED, 2, "xl", "lcm", 1024)
SSD_1B = Family("ssd_1b", "SSD-1B", _SDXL_PIPELINES, _POOLED, 2, "xl", "lcm_ssd1b", 1024)  # a distilled SDXL: its classes
SD15 = Family(
    "sd15", "Stable Diffusion 1.5",
    {"none": "StableDiffusionPipeline", "inpaint": "StableDiffusionInpaintPipeline",
     "img2img": "StableDiffusionImg2ImgPipeline", "controlnet_canny": "StableDiffusionControlNetPipeline"},
    ("prompt_embeds", "negative_prompt_embeds"), 1, "sd", "lcm_sd15", 512,
    # The runner's own guard catches NaN and black images; the checker would black out images it flags
    # (a random tiny twin's, or a real one's, as the card's code does not load it either).
    load_options={"safety_checker": None, "requires_safety_checker": False},
)
FAMILIES = {family.name: family for family in (SDXL, SSD_1B, SD15)}


@dataclass(frozen=True)
class BaseModel:
    """What planning knows of a base from its files."""

    family: Family
    inpainting: bool  # a 9-channel UNet (image, mask and masked image in): runs conditioning=inpaint only
    default_size: int  # the UNet's sample_size x the VAE's scale factor, as diffusers picks it


# The tiny zoo's bases, as their files say once built (tests/test_families.py checks the two agree):
# planning never builds the zoo (a dry run loads nothing), so an unbuilt zoo's twins are read from here.
TWIN_BASES = {"sdxl-base": (SDXL, False, 256), "sdxl-inpaint": (SDXL, True, 256), "ssd-1b": (SSD_1B, False, 256),
              "sd15-base": (SD15, False, 128), "sd15-inpaint": (SD15, True, 128)}


def read_base(source: Source) -> BaseModel:
    """The family of the base `source` names, from its model_index.json and UNet (and VAE) config."""
    if source.origin == "zoo" and not zoo.is_built() and Path(source.path).name in TWIN_BASES:
        return BaseModel(*TWIN_BASES[Path(source.path).name])
    folder = _config_folder(source)
    return _read_base(source.key, source.ref, folder)


def on_disk(source: Source) -> bool:
    """Whether a weight's files can be read while planning: local, or a twin of a built zoo."""
    return source.origin == "local" or (source.origin == "zoo" and zoo.is_built())


@functools.lru_cache(maxsize=64)
def _read_base(key: str, ref: str, folder: str) -> BaseModel:
    index = _json(key, ref, Path(folder) / "model_index.json")
    pipeline = str(index.get("_class_name", ""))
    if "unet" not in index:  # a transformer model (SD3, Flux...) or another kind of pipeline
        raise _unknown(key, ref, pipeline)
    unet = _json(key, ref, Path(folder) / "unet" / "config.json")
    try:
        vae = json.loads((Path(folder) / "vae" / "config.json").read_text())
        vae_scale = 2 ** (len(vae["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError):
        vae_scale = 8  # diffusers' fallback
    if unet.get("addition_embed_type") == "text_time" and "text_encoder_2" in index:
        # SSD-1B is SDXL with its mid block cut to one ResNet (no attention), which diffusers calls UNetMidBlock2D
        family = SSD_1B if unet.get("mid_block_type") == "UNetMidBlock2D" else SDXL
    elif pipeline.startswith("StableDiffusion") and "XL" not in pipeline and "text_encoder_2" not in index:
        family = SD15
    else:
        raise _unknown(key, ref, pipeline)
    sample = unet.get("sample_size")
    sample = sample[0] if isinstance(sample, (list, tuple)) and sample else sample
    size = int(sample) * vae_scale if isinstance(sample, int) and sample > 0 else family.size  # no size: the family's
    return BaseModel(family, int(unet.get("in_channels", 4)) == 9, size)


def _unknown(key: str, ref: str, pipeline: str) -> UserError:
    return UserError(
        f"{key}={ref!r} is a {pipeline or 'pipeline of unknown class'} (its model_index.json), which lcm-runner "
        f"does not run: it runs {', '.join(f.label for f in FAMILIES.values())} bases. Choose "
        "model=sdxl_base|sdxl_inpaint|ssd_1b|sd15|sd15_inpaint, or a folder of one of those families."
    )


def _config_folder(source: Source) -> str:
    """A local folder holding the base's config files: a twin (the zoo built if needed), a local
    folder, or, for a hub model not yet downloaded, the two small JSON files fetched alone."""
    if source.origin == "zoo":
        _ensure_zoo_once(str(zoo.zoo_dir()))
        return source.path
    if source.origin == "local":
        return source.path
    from huggingface_hub import hf_hub_download

    try:
        index = hf_hub_download(source.path, "model_index.json")
        hf_hub_download(source.path, "unet/config.json")
        try:
            hf_hub_download(source.path, "vae/config.json")
        except Exception:  # optional: the VAE's scale factor has diffusers' default
            pass
    except Exception as error:  # network, auth, missing repo: the user's to fix
        raise UserError(f"{source.key}={source.ref!r}: its model_index.json could not be read from the hub "
                        f"({type(error).__name__}). Check the name and your network, or download it first "
                        f"(`hf download {source.ref}`).") from None
    return str(Path(index).parent)


@functools.lru_cache(maxsize=4)
def _ensure_zoo_once(folder: str) -> None:
    """The twins' config files are read while planning: the zoo is built on first use (seconds)."""
    zoo.ensure_zoo(Path(folder))


def _json(key: str, ref: str, path: Path) -> dict:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{key}={ref!r}: {path} could not be read ({type(error).__name__}), so the model's "
                        "family is unknown. Point it at a complete diffusers pipeline folder.") from None
    if not isinstance(content, dict):
        raise UserError(f"{key}={ref!r}: {path} is not a JSON object. Point it at a complete diffusers pipeline folder.")
    return content


# --- LoRA files ----------------------------------------------------------------------------------------------

# Layer names that only one layout has (diffusers, kohya and original-UNet spellings alike).
_TRANSFORMER_MODEL = re.compile(r"^(transformer\.|lora_transformer_)|double_blocks|joint_blocks")
# SD 1.x/2.x put attention in the first down block and have one text encoder ("lora_te_", not te1/te2).
_SD = re.compile(r"down_blocks[._]0[._]attentions|input_blocks_1_1_|lora_te_text_model")
# SDXL's mid block holds attention and two ResNets; SSD-1B's one ResNet alone.
_SDXL_MID = re.compile(r"mid_block[._](attentions|resnets[._]1[._])|middle_block_[12]_")
_ANY_MID = re.compile(r"mid_block[._]|middle_block_")


def lora_family(names: Iterable[str]) -> Optional[str]:
    """The family a LoRA's layer names belong to: a family name, "transformer" (SD3, Flux...), or
    None where the names fit both SDXL and SSD-1B (an SDXL-shaped LoRA that leaves the mid block out)."""
    names = list(names)
    if any(_TRANSFORMER_MODEL.search(name) for name in names):
        return "transformer"
    if any(_SD.search(name) for name in names):
        return SD15.name
    if any(_SDXL_MID.search(name) for name in names):
        return SDXL.name
    if any(_ANY_MID.search(name) for name in names):
        return SSD_1B.name
    return None


def check_lora_family(key: str, path: Path, names: Iterable[str], base: BaseModel, base_ref: str) -> None:
    found = lora_family(names)
    family = base.family
    if found in (None, family.name):
        return
    what = _LORA_LABELS.get(found) or FAMILIES[found].label
    raise UserError(
        f"{key}: {path} is a LoRA for {what}, not for {family.label}, the family of model.source={base_ref!r} "
        f"(read from its files): the LoRA's layers are not the layers of that UNet. Use a LoRA trained for "
        f"{family.label} (its LCM-LoRA: lora={family.lcm_lora}), or a base of the LoRA's family."
    )


# What a LoRA's layer names can tell: SD 1.x and 2.x share their layout.
_LORA_LABELS = {"transformer": "a transformer model (SD3, Flux...)",
                SD15.name: "Stable Diffusion 1.x/2.x (such as Stable Diffusion 1.5)"}


# --- conditioning kinds and models ---------------------------------------------------------------------------


def check_conditioning_kind(kind: str, base: BaseModel, base_ref: str) -> None:
    family = base.family
    if kind not in family.pipelines:
        raise UserError(
            f"conditioning={kind} does not exist for {family.label} (model.source={base_ref!r}): lcm-runner runs "
            f"{family.label} with conditioning={'|'.join(family.pipelines)}. Choose one of those, or an "
            "SDXL base for the others."
        )
    if base.inpainting and kind != "inpaint":
        raise UserError(
            f"model.source={base_ref!r} is an inpainting model (9-channel UNet), which only runs with "
            f"conditioning=inpaint, not conditioning={kind}. Use conditioning=inpaint, or the family's "
            "text-to-image base (model=sdxl_base, model=sd15) for the other kinds."
        )


def conditioning_shape(folder: Path) -> Optional[str]:
    """"xl" or "sd" for a ControlNet or T2I-Adapter folder, from its config.json (None: unknown)."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    if config.get("_class_name") == "T2IAdapter":
        return "xl" if str(config.get("adapter_type", "")).endswith("_xl") else "sd"
    return "xl" if config.get("addition_embed_type") == "text_time" else "sd"


def check_conditioning_model(key: str, ref: str, folder: Path, component: str, base: BaseModel, base_ref: str) -> None:
    shape = conditioning_shape(folder)
    family = base.family
    if shape is None or shape == family.shape:
        return
    theirs = "SDXL (and SSD-1B)" if shape == "xl" else SD15.label
    hint = "conditioning=controlnet_canny_sd15" if family is SD15 else "conditioning=controlnet_canny"
    name = _COMPONENT_NAMES.get(component, component)
    raise UserError(
        f"{key}={ref!r} is a {name} for {theirs}, but model.source={base_ref!r} is of the {family.label} family: "
        f"its features do not fit that UNet. Use a {name} made for {family.label} ({hint} for canny edges), "
        f"or a base of the {theirs} family."
    )


_COMPONENT_NAMES = {"controlnet": "ControlNet", "adapter": "T2I-Adapter"}


