"""Per-image metrics, computed in the process that made the images (runner.config.metrics plans them).

Scores are taken from the pixels as saved (8-bit), so that scoring a sweep's PNGs later
(`lcm-grid SWEEP --metrics NAME`) gives the same numbers. A CLIP-style scorer is loaded once per
process and kept in the engine's state.

- `clip`: `scale` x the cosine of the model's image and text embeddings (torchmetrics' CLIP score:
  scale 100, floored at 0), the prompt cut at the model's 77 tokens; `scale: null` takes the model's
  own logit scale (PickScore).
- `edge_f1`: F1 of the output's canny edges (the conditioning's thresholds) against the control map's,
  an edge matching within `tolerance` pixels.
- `masked_psnr`: PSNR of the output outside the mask (mask < 128) against the input image, `cap`
  where they are identical.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from omegaconf import OmegaConf

from runner.config.metrics import MetricPlan
from runner.engine.state import ENGINE


def score_images(metrics: Sequence[MetricPlan], images: Sequence[Any], prompt: str,
                 inputs: Mapping[str, Any], canny: Optional[Tuple[int, int]] = None) -> List[Dict[str, float]]:
    """Every metric of every image (PIL images, as saved): one {name: score} per image."""
    scores: List[Dict[str, float]] = [{} for _ in images]
    for metric in metrics:
        if metric.kind == "clip":
            values = clip_scores(metric, images, prompt)
        elif metric.kind == "edge_f1":
            control = _edges_of_map(inputs["image"])
            values = [edge_f1(canny_edges(image, canny), control, metric.tolerance) for image in images]
        else:
            values = [masked_psnr(image, inputs["image"], inputs["mask_image"], metric.cap) for image in images]
        for per_image, value in zip(scores, values):
            per_image[metric.name] = round(float(value), 6)
    return scores


def scorer_folders(metric: MetricPlan) -> Tuple[str, str]:
    """The folders of a CLIP-style metric's model and processor (the model's own by default)."""
    model = metric.model.path
    return model, metric.processor.path if metric.processor is not None else model


def clip_scores(metric: MetricPlan, images: Sequence[Any], prompt: str) -> List[float]:
    import torch

    model, processor = _scorer(*scorer_folders(metric))
    batch = processor(text=[prompt] * len(images), images=list(images), return_tensors="pt", padding=True,
                      truncation=True, max_length=77)
    with torch.inference_mode():
        out = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                    pixel_values=batch["pixel_values"])
    image = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
    text = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
    scale = metric.scale if metric.scale is not None else float(model.logit_scale.detach().exp())
    scores = (scale * (image * text).sum(-1)).tolist()
    return [max(score, metric.floor) if metric.floor is not None else score for score in scores]


def _scorer(model_folder: str, processor_folder: str):
    key = ("clip", model_folder, processor_folder)
    kept = ENGINE.components.get(key)
    if kept is None:
        from transformers import CLIPModel, CLIPProcessor

        kept = (CLIPModel.from_pretrained(model_folder).eval(), CLIPProcessor.from_pretrained(processor_folder))
        ENGINE.components.put(key, kept)
    return kept


def canny_edges(image: Any, thresholds: Optional[Tuple[int, int]]) -> np.ndarray:
    """The canny edges of an image as booleans, with the conditioning's thresholds."""
    import cv2

    low, high = thresholds or (100, 200)
    return cv2.Canny(np.asarray(image.convert("RGB")), low, high) > 0


def _edges_of_map(control: Any) -> np.ndarray:
    return np.asarray(control.convert("L")) > 127


def edge_f1(edges: np.ndarray, reference: np.ndarray, tolerance: int) -> float:
    """F1 of `edges` against `reference` (boolean maps of one size): a pixel counts as matched where the
    other map has an edge within `tolerance` pixels. Two empty maps agree (1.0)."""
    if not edges.any() and not reference.any():
        return 1.0
    if not edges.any() or not reference.any():
        return 0.0
    precision = float((edges & _near(reference, tolerance)).sum() / edges.sum())
    recall = float((reference & _near(edges, tolerance)).sum() / reference.sum())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _near(edges: np.ndarray, tolerance: int) -> np.ndarray:
    import cv2

    if tolerance == 0:
        return edges
    kernel = np.ones((2 * tolerance + 1, 2 * tolerance + 1), np.uint8)
    return cv2.dilate(edges.astype(np.uint8), kernel) > 0


def masked_psnr(image: Any, reference: Any, mask: Any, cap: float) -> float:
    """PSNR (dB, 8-bit peak) of `image` against `reference` where `mask` is dark, at most `cap`."""
    size = image.size
    keep = np.asarray(mask.convert("L").resize(size)) < 128
    if not keep.any():
        return cap
    ours = np.asarray(image.convert("RGB"), dtype=np.float64)[keep]
    theirs = np.asarray(reference.convert("RGB").resize(size), dtype=np.float64)[keep]
    mse = float(np.mean((ours - theirs) ** 2))
    return cap if mse == 0 else min(cap, 10 * math.log10(255.0 ** 2 / mse))


def rescore_job(job_dir: Path, options: Mapping[str, Any]) -> bool:
    """Score a finished job's PNGs with the metric `options` ({name: metrics entry}) and record the
    scores in its run.json (the PNGs stay as they are). False: the job has no images to score."""
    from PIL import Image

    from runner.config.conditioning import plan_conditioning
    from runner.config.metrics import plan_metrics
    from runner.outputs import records

    record = records.read_json(job_dir / records.RUN_JSON)
    if record.get("status") not in ("ok", "skipped") or not record.get("images"):
        return False
    config = OmegaConf.create(record["config"])
    twins = dict(config.zoo.twins) if config.zoo.name == "tiny" else {}
    conditioning = plan_conditioning(config.conditioning, twins)
    plans = plan_metrics(OmegaConf.create(dict(options)), conditioning.kind, twins)
    fed = {role: Image.open(job_dir / path) for role, path in (record.get("inputs") or {}).items()}
    inputs = {"image": fed.get("control_image") or fed.get("image"), "mask_image": fed.get("mask_image")}
    images = [Image.open(job_dir / entry["file"]).convert("RGB") for entry in record["images"]]
    for entry, scores in zip(record["images"], score_images(plans, images, record["call"]["prompt"], inputs,
                                                            conditioning.canny)):
        entry["metrics"] = {**entry.get("metrics", {}), **scores}
    record["components"].update((plan.name, plan.model.path) for plan in plans if plan.model is not None)
    records.write_json(job_dir / records.RUN_JSON, record)
    return True
