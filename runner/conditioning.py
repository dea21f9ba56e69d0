"""Image conditioning: what each kind needs, checked while planning, and the images it feeds.

Planning (`plan_conditioning`) is torch-free: a missing image or mask is reported before any
model loads. `prepare_inputs` does what the model card does by hand: load, resize, Canny with
OpenCV, stack to three channels, and keeps every picture fed to the pipeline in the job folder.
"""
from __future__ import annotations

import io
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from runner import file_checks, sources, zoo
from runner.errors import UserError
from runner.sources import Source

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
    "controlnet_canny": _ControlNetCanny,
    "t2i_adapter_canny": _T2IAdapterCanny,
}
# The diffusers pipeline each kind runs, and the name of its extra model in run.json.
PIPELINES = {
    "none": "StableDiffusionXLPipeline",
    "inpaint": "StableDiffusionXLInpaintPipeline",
    "controlnet_canny": "StableDiffusionXLControlNetPipeline",
    "t2i_adapter_canny": "StableDiffusionXLAdapterPipeline",
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


def plan_conditioning(node: DictConfig, twins: Mapping[str, str], allow_pickle: bool = False) -> ConditioningPlan:
    kind = node.get("kind")
    if kind not in SCHEMAS:
        raise UserError(f"conditioning.kind={kind!r} is not one of {', '.join(SCHEMAS)}; "
                        "choose conditioning=none|inpaint|controlnet_canny|t2i_adapter_canny.")
    cond = _typed(node, SCHEMAS[kind])
    problems = list(_problems(kind, cond))
    if problems:
        raise UserError("Invalid conditioning: " + "; ".join(problems) + ". Fix the value on the "
                        "command line (for example `conditioning.conditioning_scale=0.5`) or in the experiment file.")
    if kind == "none":
        return ConditioningPlan(kind, PIPELINES[kind])
    roles = ("image", "mask_image") if kind == "inpaint" else ("image",)
    images = tuple((role, resolve_image(f"conditioning.{role}", cond[role], twins)) for role in roles)
    if kind == "inpaint":
        return ConditioningPlan(kind, PIPELINES[kind], images=images, call=(("strength", cond.strength),))
    model = sources.resolve_folder("conditioning.model.source", cond.model.source, twins)
    if model.origin == "local":
        file_checks.check_model_folder("conditioning.model.source", Path(model.path), allow_pickle, pipeline=False)
    if kind == "controlnet_canny":
        call = (("controlnet_conditioning_scale", cond.conditioning_scale),
                ("control_guidance_start", cond.control_guidance_start),
                ("control_guidance_end", cond.control_guidance_end))
        detect = None
    else:
        call = (("adapter_conditioning_scale", cond.conditioning_scale),
                ("adapter_conditioning_factor", cond.conditioning_factor))
        detect = cond.detect_resolution
    return ConditioningPlan(kind, PIPELINES[kind], MODEL_COMPONENTS[kind], model,
                            sources.variant_for(model, cond.model.variant),
                            images, call, (cond.low_threshold, cond.high_threshold), detect)


def _typed(node: DictConfig, schema: type) -> DictConfig:
    try:
        values = OmegaConf.to_container(node, resolve=True)  # interpolations need the whole config
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
    """A local image file, or a URL when the hub is reachable."""
    if ref in twins:
        return str(zoo.zoo_dir() / twins[ref])
    if ref.startswith(("http://", "https://")):
        if sources.offline():
            raise UserError(
                f"{key}={ref!r} is a URL but HF_HUB_OFFLINE is set, so it cannot be fetched. "
                f"Download the image and pass its local path ({key}=/path/to/image.png), or use zoo=tiny."
            )
        return ref
    path = Path(ref).expanduser()
    if not path.is_file():
        raise UserError(f"{key}={ref!r} does not exist or is not a file. Pass the path of an image "
                        f"(PNG, JPEG...) or a URL, e.g. {key}=/path/to/image.png.")
    file_checks.check_image_file(key, path)
    return str(path.resolve())


# --- run time -------------------------------------------------------------------------------


def prepare_inputs(plan: ConditioningPlan, width: int, height: int) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The pipeline keywords for the conditioning images, and every image fed, by role. A sweep over
    scales, seeds or steps feeds the same images every job: they are made once while their files
    stay as they were (path, size, modification time)."""
    if plan.kind == "none":
        return {}, {}
    if any(ref.startswith(str(zoo.zoo_dir())) for _, ref in plan.images):
        zoo.ensure_zoo()
    key = (plan.kind, plan.images, plan.canny, plan.detect_resolution, width, height,
           tuple(_file_identity(ref) for _, ref in plan.images))
    if key not in _PREPARED:
        _keep(_PREPARED, key, _prepare(plan, width, height))
    images_in, fed = _PREPARED[key]
    return dict(images_in), dict(fed)


def _prepare(plan: ConditioningPlan, width: int, height: int) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    loaded = {role: _load_image(ref) for role, ref in plan.images}
    if plan.kind == "inpaint":
        fed = {role: image.resize((width, height)) for role, image in loaded.items()}
        return dict(fed), fed
    detect = plan.detect_resolution
    source = loaded["image"].resize((detect, detect) if detect else (width, height))
    control = canny_map(source, *plan.canny)
    if detect:
        control = control.resize((width, height))
    fed = {"image": source, "control_image": control}
    return {"image": control}, fed


def canny_map(image, low: int, high: int):
    """OpenCV Canny edges as a three-channel image, exactly as the model card builds it."""
    import cv2
    import numpy as np
    from PIL import Image

    edges = cv2.Canny(np.array(image), low, high)[:, :, None]
    return Image.fromarray(np.concatenate([edges, edges, edges], axis=2))


def save_inputs(job_dir: Path, images: Mapping[str, Any]) -> Dict[str, str]:
    from runner.records import save_bytes

    files = {}
    for role, image in images.items():
        relative = f"{INPUTS_DIR}/{role}.png"
        save_bytes(job_dir / relative, _png(image))
        files[role] = relative
    return files


# Prepared inputs (key -> (pipeline keywords, images fed)) and their PNG files' bytes (id -> (image,
# bytes)), the few most recent: a sweep switches conditioning images rarely (cost order).
KEPT = 4
_PREPARED: "OrderedDict[Tuple, Tuple[Dict[str, Any], Dict[str, Any]]]" = OrderedDict()
_ENCODED: "OrderedDict[int, Tuple[Any, bytes]]" = OrderedDict()


def _png(image: Any) -> bytes:
    """What `image.save(path, format="PNG")` writes, encoded once per image however many jobs it feeds."""
    kept = _ENCODED.get(id(image))
    if kept is None or kept[0] is not image:  # an id is only reused once its image is gone
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        kept = (image, buffer.getvalue())
        _keep(_ENCODED, id(image), kept, limit=2 * KEPT)  # up to two images per prepared set
    return kept[1]


def _keep(store: "OrderedDict", key: Any, value: Any, limit: int = KEPT) -> None:
    store[key] = value
    while len(store) > limit:
        store.popitem(last=False)


def _file_identity(ref: str) -> Tuple:
    """A local file as it is now (a URL as itself: offline runs read it from the hub's cache)."""
    try:
        stat = Path(ref).stat()
    except (OSError, ValueError):
        return (ref,)
    return (ref, stat.st_size, stat.st_mtime_ns)


def save_side_by_side(job_dir: Path, inputs: Mapping[str, Any], outputs) -> str:
    """The images fed to the pipeline, then its outputs, in one row, like the card's make_image_grid."""
    from diffusers.utils import make_image_grid

    from runner.records import save_png

    row = list(inputs.values()) + list(outputs)
    relative = f"{INPUTS_DIR}/side_by_side.png"
    save_png(job_dir / relative, make_image_grid(row, rows=1, cols=len(row)))
    return relative


def _load_image(ref: str):
    from diffusers.utils import load_image  # the card's loader: EXIF orientation, then RGB

    return load_image(ref)
