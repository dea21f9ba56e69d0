"""Per-image metrics, planned: which scores a job computes and with which models, checked before any
model loads. The scores themselves are computed by runner.engine.metrics. Torch-free.

A metric is an entry of `metrics` (the option names of conf/metrics/ are its keys, and the names of
its run.json and summary.csv values): `clip` scores the image against its prompt with a CLIP-style
model (CLIP score, PickScore, or any such model by config), `edge_f1` compares the output's canny
edges with the control map (ControlNet / T2I-Adapter), `masked_psnr` the output outside the mask
with the input image (inpainting).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

from omegaconf import DictConfig

from runner.config import sources
from runner.config.sources import Source
from runner.errors import UserError
from runner.config.plan_memo import memoized

KINDS = ("clip", "edge_f1", "masked_psnr")
# The conditioning kinds each model-free metric compares with.
APPLIES_TO = {"edge_f1": ("controlnet_canny", "t2i_adapter_canny"), "masked_psnr": ("inpaint",)}


@dataclass(frozen=True)
class MetricPlan:
    name: str  # the option name: run.json's and summary.csv's key
    kind: str
    model: Optional[Source] = None  # clip: the model's folder
    processor: Optional[Source] = None  # clip: its processor's folder (the model's own when None)
    scale: Optional[float] = None  # clip: None is the model's logit scale
    floor: Optional[float] = None
    tolerance: int = 2
    cap: float = 100.0


@memoized
def plan_metrics(node: DictConfig, conditioning_kind: str, twins: Mapping[str, str]) -> Tuple[MetricPlan, ...]:
    """The metrics a job computes, each checked against its workflow and its model resolved."""
    return tuple(_plan(str(name), entry, conditioning_kind, twins) for name, entry in node.items())


def _plan(name: str, entry: DictConfig, conditioning_kind: str, twins: Mapping[str, str]) -> MetricPlan:
    kind = str(entry.kind)
    if kind not in KINDS:
        raise UserError(f"metrics.{name}.kind={kind!r} is not a metric kind: choose one of {', '.join(KINDS)}.")
    if kind in APPLIES_TO and conditioning_kind not in APPLIES_TO[kind]:
        raise UserError(
            f"metrics.{name} ({kind}) scores {' and '.join(APPLIES_TO[kind])} jobs, and this job's conditioning "
            f"is {conditioning_kind!r}: drop it from metrics, or use it with "
            f"conditioning={APPLIES_TO[kind][0]} (as experiment={APPLIES_TO[kind][0]} does).")
    if kind != "clip":
        if entry.tolerance < 0 or entry.cap <= 0:
            raise UserError(f"metrics.{name}: tolerance={entry.tolerance} must be 0 or more and cap={entry.cap} "
                            "more than 0.")
        return MetricPlan(name, kind, tolerance=int(entry.tolerance), cap=float(entry.cap))
    if not entry.model:
        raise UserError(f"metrics.{name}.model is not set: give the CLIP-style model (a hub id or a folder), "
                        "e.g. metrics.clip_score.model=openai/clip-vit-large-patch14.")
    model = sources.resolve_folder(f"metrics.{name}.model", str(entry.model), twins)
    processor = (sources.resolve_folder(f"metrics.{name}.processor", str(entry.processor), twins)
                 if entry.processor else None)
    return MetricPlan(name, kind, model, processor,
                      None if entry.scale is None else float(entry.scale),
                      None if entry.floor is None else float(entry.floor))
