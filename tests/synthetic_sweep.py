"""A sweep folder as `lcm-run -m` leaves it, without running a model: for the gallery's tests and its
benchmark, which need hundreds to thousands of images. Each job's image, its PNG metadata and its
run.json are written by the runner's own writers (runner.outputs), one job per combination of the
axes; each image is one flat colour, with a clip_score to sort by.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Dict, List

from PIL import Image

from runner.outputs import png_metadata, records

AXES = ("sampling.seed", "sampling.steps", "sampling.guidance_scale")  # the order typed: seed across the sheets


def score(job: int) -> float:
    """A clip_score in [0, 1) that is no monotonic function of the job number (so sorting shows)."""
    return round((job * 7919 % 1000) / 1000, 3)


def write_sweep(root: Path, steps: List[int], guidance: List[float], seeds: List[int],
                size: tuple = (64, 64), scored: bool = True) -> Path:
    """len(steps) * len(guidance) * len(seeds) jobs of one image each, seeds varying fastest; with
    `scored`, each image has a clip_score (and the report draws its plot)."""
    for number, (step, cfg, seed) in enumerate(itertools.product(steps, guidance, seeds)):
        job = root / str(number)
        job.mkdir(parents=True)
        record = _record(job, step, cfg, seed, size)
        entry = {"file": records.image_name(0, seed), "seed": seed, "index": 0}
        if scored:
            entry["metrics"] = {"clip_score": score(number)}
        record["images"] = [entry]
        colour = (40 + 50 * step % 200, int(80 * cfg) % 256, seed * 37 % 256)
        records.save_png(job / entry["file"], Image.new("RGB", size, colour), png_metadata.png_info(record, entry))
        records.write_json(job / records.RUN_JSON, record)
    return root


def _record(job: Path, steps: int, guidance: float, seed: int, size: tuple) -> Dict[str, Any]:
    width, height = size
    sampling = {"prompt": "a paper fox", "negative_prompt": None, "steps": steps, "guidance_scale": guidance,
                "seed": seed, "num_images": 1, "height": height, "width": width}
    return {
        "status": "ok",
        "config": {"model": {"source": "stabilityai/stable-diffusion-xl-base-1.0"}, "sampling": sampling,
                   "paths": {"output_dir": str(job)}},
        "overrides": [f"{key}={value}" for key, value in zip(AXES, (seed, steps, guidance))],
        "pipeline": "StableDiffusionXLPipeline",
        "scheduler": {"class": "LCMScheduler"},
        "call": {"prompt": "a paper fox", "num_inference_steps": steps, "guidance_scale": guidance,
                 "width": width, "height": height},
        "timings": {"total": 0.5},
        "error": None,
    }
