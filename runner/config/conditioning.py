"""Image conditioning, planned: what each kind needs, checked before any model loads (a missing
image or mask is reported at once). The images themselves are made by runner.engine.conditioning.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Tuple

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from runner.config import file_checks, models_root, sources
from runner.config.families import SDXL, BaseModel, check_conditioning_kind, check_conditioning_model, on_disk
from runner import zoo
from runner.errors import UserError
from runner.config.plain import to_builtin
from runner.config.sources import Source
from runner.config.plan_memo import memoized

INPUTS_DIR = "inputs"


@dataclass
class _NoConditioning:
    kind: str = "none"


@dataclass
class _Inpaint:
    kind: str = "inpaint"
    image: str = MISSING
    mask_image: str = MISSING
    strength: float = 0.9999


@dataclass
class _Img2Img:
    kind: str = "img2img"
    image: str = MISSING
    strength: float = 0.6  # how much of the image is redrawn: int(steps x strength) steps run


@dataclass
class _ConditioningModel:
    source: str = MISSING
    variant: Optional[str] = None


@dataclass
class _Canny:
    """What both canny kinds take: a source image, a conditioning model and its scale."""

    kind: str = MISSING
    image: str = MISSING
    model: _ConditioningModel = field(default_factory=_ConditioningModel)
    conditioning_scale: float = 1.0
    low_threshold: int = 100
    high_threshold: int = 200


@dataclass
class _ControlNetCanny(_Canny):
    kind: str = "controlnet_canny"
    control_guidance_start: float = 0.0
    control_guidance_end: float = 1.0


@dataclass
class _T2IAdapterCanny(_Canny):
    kind: str = "t2i_adapter_canny"
    conditioning_factor: float = 1.0
    detect_resolution: Optional[int] = None  # None: detect at the output size


SCHEMAS = {
    "none": _NoConditioning,
    "inpaint": _Inpaint,
    "img2img": _Img2Img,
    "controlnet_canny": _ControlNetCanny,
    "t2i_adapter_canny": _T2IAdapterCanny,
}
MODEL_COMPONENTS = {"controlnet_canny": "controlnet", "t2i_adapter_canny": "adapter"}


@dataclass(frozen=True)
class ConditioningPlan:
    kind: str
    pipeline: str  # diffusers pipeline class name
    component: Optional[str] = None  # "controlnet" / "adapter"
    model: Optional[Source] = None
    model_variant: Optional[str] = None
    images: Tuple[Tuple[str, str], ...] = ()  # (role, local path or URL)
    call: Tuple[Tuple[str, Any], ...] = ()  # pipeline keywords by diffusers' names
    canny: Optional[Tuple[int, int]] = None
    detect_resolution: Optional[int] = None


@memoized
def plan_conditioning(node: DictConfig, twins: Mapping[str, str], allow_pickle: bool = False,
                      names: Optional["models_root.ModelsRoot"] = None, base: Optional[BaseModel] = None,
                      base_ref: str = "") -> ConditioningPlan:
    """`base`: what the base's files say (None: an SDXL base), which decides the kinds that exist,
    their pipeline classes and the ControlNets and T2I-Adapters that fit; `names`: the models folder
    a bare name is looked up in."""
    kind = node.get("kind")
    if kind not in SCHEMAS:
        raise UserError(f"conditioning.kind={kind!r} is not one of {', '.join(SCHEMAS)}; "
                        "choose conditioning=none|inpaint|img2img|controlnet_canny|t2i_adapter_canny.")
    cond = _typed(node, SCHEMAS[kind])
    problems = list(_problems(kind, cond))
    if problems:
        raise UserError("Invalid conditioning: " + "; ".join(problems) + ". Fix the value on the "
                        "command line (for example `conditioning.conditioning_scale=0.5`) or in the experiment file.")
    if base is not None:
        check_conditioning_kind(kind, base, base_ref)
    pipeline = (base.family if base is not None else SDXL).pipelines[kind]
    if kind == "none":
        return ConditioningPlan(kind, pipeline)
    roles = ("image", "mask_image") if kind == "inpaint" else ("image",)
    images = tuple((role, resolve_image(f"conditioning.{role}", cond[role], twins)) for role in roles)
    if kind in ("inpaint", "img2img"):
        return ConditioningPlan(kind, pipeline, images=images, call=(("strength", cond.strength),))
    key = "conditioning.model.source"  # a bare name: a ControlNet / T2I-Adapter in the models folder
    model = sources.resolve_folder(key, models_root.resolve_name(names, key, cond.model.source), twins)
    if model.origin == "local":
        file_checks.check_model_folder("conditioning.model.source", Path(model.path), allow_pickle, pipeline=False)
    if base is not None and on_disk(model):  # a twin's files once the zoo is built
        check_conditioning_model("conditioning.model.source", model.ref, Path(model.path), MODEL_COMPONENTS[kind],
                                 base, base_ref)
    if kind == "controlnet_canny":
        call = (("controlnet_conditioning_scale", cond.conditioning_scale),
                ("control_guidance_start", cond.control_guidance_start),
                ("control_guidance_end", cond.control_guidance_end))
        detect = None
    else:
        call = (("adapter_conditioning_scale", cond.conditioning_scale),
                ("adapter_conditioning_factor", cond.conditioning_factor))
        detect = cond.detect_resolution
    return ConditioningPlan(kind, pipeline, MODEL_COMPONENTS[kind], model,
                            sources.variant_for(model, cond.model.variant),
                            images, call, (cond.low_threshold, cond.high_threshold), detect)


def _typed(node: DictConfig, schema: type) -> DictConfig:
    try:
        values = to_builtin(node) if isinstance(node, dict) else OmegaConf.to_container(node, resolve=True)
        return OmegaConf.merge(OmegaConf.structured(schema), values)
    except OmegaConfBaseException as error:
        key = f"conditioning.{error.full_key}" if getattr(error, "full_key", None) else "conditioning"
        allowed = ", ".join(f.name for f in schema.__dataclass_fields__.values())
        raise UserError(f"{key} is not valid for conditioning.kind={node.get('kind')!r} "
                        f"({str(error).splitlines()[0]}). That kind takes: {allowed}.") from None


def _problems(kind: str, cond: DictConfig) -> Iterator[str]:
    for key in ("strength",):
        if key in cond and not 0 < cond[key] <= 1:
            yield f"conditioning.{key}={cond[key]} must be in (0, 1]"
    for key in ("conditioning_scale", "conditioning_factor"):
        if key in cond and cond[key] < 0:
            yield f"conditioning.{key}={cond[key]} must be 0 or more"
    if "control_guidance_start" in cond and not (
        0 <= cond.control_guidance_start < cond.control_guidance_end <= 1
    ):
        yield (f"conditioning.control_guidance_start={cond.control_guidance_start} and "
               f"control_guidance_end={cond.control_guidance_end} must satisfy 0 <= start < end <= 1")
    if "low_threshold" in cond and not 0 <= cond.low_threshold <= cond.high_threshold <= 255:
        yield (f"conditioning.low_threshold={cond.low_threshold} and high_threshold="
               f"{cond.high_threshold} must satisfy 0 <= low <= high <= 255")
    if cond.get("detect_resolution") is not None and cond.detect_resolution < 8:
        yield f"conditioning.detect_resolution={cond.detect_resolution} must be at least 8"


def resolve_image(key: str, ref: str, twins: Mapping[str, str]) -> str:
    """A local image file (a hub file's URL: its copy in the Hugging Face cache), or a URL when the
    hub is reachable."""
    if ref in twins:
        return str(zoo.zoo_dir() / twins[ref])
    if ref.startswith(("http://", "https://")):
        found = sources.resolve_url(key, ref)  # a hub file's URL reads the Hugging Face cache
        if found != ref:
            file_checks.check_image_file(key, Path(found))
        return found
    path = Path(ref).expanduser()
    if not path.is_file():
        raise UserError(f"{key}={ref!r} does not exist or is not a file. Pass the path of an image "
                        f"(PNG, JPEG...) or a URL, e.g. {key}=/path/to/image.png.")
    file_checks.check_image_file(key, path)
    return str(path.resolve())
