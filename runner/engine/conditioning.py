"""Image conditioning at run time: the images a job feeds, made as the model card makes them by hand
(load, resize, Canny with OpenCV, stack to three channels), and every picture fed kept in the job
folder. A sweep over scales, seeds or steps feeds the same images every job: they are made and
PNG-encoded once, kept in the engine's state (runner.engine.state)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

from runner import zoo
from runner.config.conditioning import INPUTS_DIR, ConditioningPlan
from runner.engine.state import ENGINE, keep_recent
from runner.outputs.records import save_bytes, save_png


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
    if key not in ENGINE.prepared_inputs:
        keep_recent(ENGINE.prepared_inputs, key, _prepare(plan, width, height), ENGINE.KEPT_INPUTS)
    images_in, fed = ENGINE.prepared_inputs[key]
    return dict(images_in), dict(fed)


def _prepare(plan: ConditioningPlan, width: int, height: int) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    loaded = {role: _load_image(ref) for role, ref in plan.images}
    if plan.kind in ("inpaint", "img2img"):
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
    files = {}
    for role, image in images.items():
        relative = f"{INPUTS_DIR}/{role}.png"
        save_bytes(job_dir / relative, _png(image))
        files[role] = relative
    return files


def _png(image: Any) -> bytes:
    """What `image.save(path, format="PNG")` writes, encoded once per image however many jobs it feeds."""
    kept = ENGINE.encoded_inputs.get(id(image))
    if kept is None or kept[0] is not image:  # an id is only reused once its image is gone
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        kept = (image, buffer.getvalue())
        keep_recent(ENGINE.encoded_inputs, id(image), kept, 2 * ENGINE.KEPT_INPUTS)  # two images per prepared set
    return kept[1]


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

    row = list(inputs.values()) + list(outputs)
    relative = f"{INPUTS_DIR}/side_by_side.png"
    save_png(job_dir / relative, make_image_grid(row, rows=1, cols=len(row)))
    return relative


def _load_image(ref: str):
    from diffusers.utils import load_image  # the card's loader: EXIF orientation, then RGB

    return load_image(ref)
