"""Per-image metrics (metrics=[clip_score,pick_score,edge_f1,masked_psnr]), cells.csv, the plots and
`lcm-grid --metrics`: scores checked against hand computations."""
import csv
import json
import math
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from runner.config import job_identity
from runner.config.job_plan import plan_job
from runner.engine import metrics
from runner.errors import UserError
from tests.helpers import make_config

CHROMIUM = Path("/usr/bin/chromium")
SMALL = ["zoo=tiny", "sampling.height=64", "sampling.width=64"]


def noise_image(seed, size=(64, 64)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size[::-1], 3), dtype=np.uint8))


def by_hand(folder, images, prompt, scale=None):
    """100 x cos (or the model's logit scale x cos) with transformers, as torchmetrics computes it."""
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
    with torch.no_grad():
        text = model.get_text_features(**processor(text=[prompt], return_tensors="pt", padding=True,
                                                   truncation=True, max_length=77))
        image = model.get_image_features(**processor(images=images, return_tensors="pt"))
    text, image = (getattr(t, "pooler_output", t) for t in (text, image))  # transformers 5 returns outputs
    cos = torch.nn.functional.cosine_similarity(image, text)
    return ((scale if scale is not None else model.logit_scale.exp()) * cos).tolist()


def test_clip_score_is_100_cosine_floored_at_0_as_torchmetrics_defines_it(tiny_zoo):
    plan = plan_job(make_config(*SMALL, "metrics=[clip_score]"))
    (metric,) = plan.metrics
    assert metric.model.path == str(tiny_zoo / "clip-vit-large-patch14") and (metric.scale, metric.floor) == (100, 0)
    images = [noise_image(seed) for seed in range(4)]
    prompt = "a photo of a cat " * 30  # past 77 tokens: cut for scoring
    expected = [max(0.0, value) for value in by_hand(tiny_zoo / "clip-vit-large-patch14", images, prompt, 100)]
    got = [scores["clip_score"] for scores in metrics.score_images(plan.metrics, images, prompt, {})]
    assert got == pytest.approx(expected, abs=1e-4)
    assert any(value > 0 for value in got)


def test_pick_score_takes_its_own_model_processor_and_logit_scale_unfloored(tiny_zoo, tmp_path):
    """Another CLIP-style model by config: PickScore's keys on a second tiny model."""
    from transformers import CLIPModel

    other = tmp_path / "other-clip"
    torch.manual_seed(123)
    model = CLIPModel.from_pretrained(tiny_zoo / "clip-vit-large-patch14")
    for parameter in model.parameters():
        parameter.data.normal_(0, 0.2)
    model.logit_scale.data.fill_(math.log(20.0))
    model.save_pretrained(other)
    plan = plan_job(make_config(*SMALL, "metrics=[pick_score]", f"metrics.pick_score.model={other}",
                                f"metrics.pick_score.processor={tiny_zoo / 'clip-vit-large-patch14'}"))
    (metric,) = plan.metrics
    assert metric.scale is None and metric.floor is None and metric.processor.path.endswith("clip-vit-large-patch14")
    images = [noise_image(seed) for seed in range(6)]
    shutil.copytree(tiny_zoo / "clip-vit-large-patch14", tmp_path / "with-processor")
    for name in ("config.json", "model.safetensors"):
        shutil.copy(other / name, tmp_path / "with-processor" / name)
    expected = by_hand(tmp_path / "with-processor", images, "a red fox")
    got = [scores["pick_score"] for scores in metrics.score_images(plan.metrics, images, "a red fox", {})]
    assert got == pytest.approx(expected, abs=1e-4)
    assert min(got) < 0, "unfloored"


def test_edge_f1_of_a_map_with_itself_is_1_and_of_disjoint_maps_0():
    a = np.zeros((32, 32), bool)
    a[8, :] = True
    b = np.zeros((32, 32), bool)
    b[24, :] = True
    assert metrics.edge_f1(a, a, tolerance=0) == 1.0
    assert metrics.edge_f1(a, b, tolerance=2) == 0.0
    shifted = np.roll(a, 2, axis=0)
    assert metrics.edge_f1(shifted, a, tolerance=0) == 0.0 and metrics.edge_f1(shifted, a, tolerance=2) == 1.0
    half = a.copy()
    half[8, 16:] = False  # precision 1, recall 1/2
    assert metrics.edge_f1(half, a, tolerance=0) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert metrics.edge_f1(np.zeros_like(a), np.zeros_like(a), 0) == 1.0


def test_masked_psnr_compares_outside_the_mask_and_caps_identical_regions():
    reference = np.full((16, 16, 3), 100, np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    mask[:, 8:] = 255  # the inpainted half: not compared
    output = reference.copy()
    output[:, 8:] = 0  # changed where inpainted only
    as_image = Image.fromarray
    assert metrics.masked_psnr(as_image(output), as_image(reference), as_image(mask), cap=100.0) == 100.0
    output[:, :8] = 110  # off by 10 everywhere outside the mask
    expected = 10 * math.log10(255 ** 2 / 100)
    assert metrics.masked_psnr(as_image(output), as_image(reference), as_image(mask), 100.0) == pytest.approx(expected)
    assert metrics.masked_psnr(as_image(output), as_image(reference), as_image(mask), 20.0) == 20.0


@pytest.mark.parametrize("overrides,fragment", [
    (["metrics=[edge_f1]"], "metrics.edge_f1 (edge_f1) scores controlnet_canny and t2i_adapter_canny jobs"),
    (["metrics=[masked_psnr]", "experiment=controlnet_canny"], "metrics.masked_psnr (masked_psnr) scores inpaint jobs"),
    (["metrics=[clip_score]", "metrics.clip_score.model=null"], "metrics.clip_score.model is not set"),
])
def test_a_metric_that_does_not_fit_is_refused_at_planning(tiny_zoo, overrides, fragment):
    with pytest.raises(UserError) as raised:
        plan_job(make_config(*SMALL, *overrides))
    assert fragment in str(raised.value)


def test_metrics_are_not_part_of_a_jobs_identity():
    assert job_identity(make_config(*SMALL)) == job_identity(make_config(*SMALL, "metrics=[clip_score,pick_score]"))


@pytest.mark.slow
def test_a_scored_sweep_records_ranks_plots_and_rescores_the_same(tiny_zoo, tmp_path):
    from benchmarks.bench import run_hydra
    from runner.commands import lcm_grid, lcm_run

    sweep = tmp_path / "sweep"
    run_hydra(lcm_run.run_app, [*SMALL, "prompts=builtin", "prompts.limit=2", "metrics=[clip_score,pick_score]",
                                "sampling.steps=1,2", "sampling.seed=0,1", f"hydra.sweep.dir={sweep}"])
    records = [json.loads(path.read_text()) for path in sorted(sweep.glob("*/run.json"))]
    assert len(records) == 8
    for record in records:
        assert set(record["images"][0]["metrics"]) == {"clip_score", "pick_score"}
        assert record["components"]["clip_score"] == str(tiny_zoo / "clip-vit-large-patch14")
        png = Image.open(sweep / record["config"]["paths"]["output_dir"] / record["images"][0]["file"])
        assert json.loads(png.text["lcm-runner"])["image"]["metrics"] == record["images"][0]["metrics"]
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert {"clip_score", "pick_score"} <= set(rows[0])
    by_cell = {}
    for row in rows:  # a cell: steps (seeds and prompts averaged over)
        by_cell.setdefault(row["sampling.steps"], []).append(float(row["pick_score"]))
    cells = list(csv.DictReader((sweep / "cells.csv").open()))
    assert [c["sampling.steps"] for c in cells] == sorted(by_cell, key=lambda s: -statistics.mean(
        float(r["clip_score"]) for r in rows if r["sampling.steps"] == s)), "best first by the first metric"
    for cell in cells:
        values = by_cell[cell["sampling.steps"]]
        assert int(cell["pick_score_count"]) == 4
        assert float(cell["pick_score_mean"]) == pytest.approx(statistics.mean(values), abs=1e-4)
        assert float(cell["pick_score_std"]) == pytest.approx(statistics.stdev(values), abs=1e-4)
    for name in ("clip_score", "pick_score"):
        assert Image.open(sweep / f"plot_{name}.png").size[0] > 300
        assert (sweep / f"plot_{name}.svg").read_text().lstrip().startswith("<?xml")
    before = {path: json.loads(path.read_text())["images"][0]["metrics"] for path in sweep.glob("*/run.json")}
    pngs = {path: path.read_bytes() for path in sweep.glob("*/image_*.png")}
    for path in before:  # scores of an old sweep, made afresh from its PNGs
        record = json.loads(path.read_text())
        del record["images"][0]["metrics"]
        path.write_text(json.dumps(record))
    assert lcm_grid.main([str(sweep), "--metrics", "clip_score", "pick_score"]) == 0
    for path, scores in before.items():
        assert json.loads(path.read_text())["images"][0]["metrics"] == pytest.approx(scores, abs=1e-3)
    assert {path: path.read_bytes() for path in sweep.glob("*/image_*.png")} == pngs, "PNGs are never rewritten"
    assert lcm_grid.main([str(sweep), "--metrics", "nope"]) == 2
    if not CHROMIUM.exists():
        pytest.fail("Chromium is needed to check the gallery in a browser: apt-get install -y chromium")
    _check_gallery_sorts(sweep, tmp_path, before)


def _check_gallery_sorts(sweep, tmp_path, scores):
    dom = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=5000", "--dump-dom", (sweep / "index.html").as_uri() + "#sort=pick_score"],
        capture_output=True, text=True, timeout=60).stdout
    assert 'src="plot_clip_score.png"' in dom and 'href="cells.csv"' in dom
    assert dom.count('<span class="prompt" title="') == 8, "each image's prompt from the set, drawn by the page"
    shown = [float(value) for value in re.findall(r'<figure class="item"[^>]*data-m1="([^"]+)"', dom)]
    assert len(shown) == 8 and shown == sorted(shown, reverse=True), "best first by pick_score"
    assert sorted(shown) == sorted(s["pick_score"] for s in scores.values())


@pytest.mark.slow
def test_conditioned_workflows_score_their_own_inputs(tiny_zoo, tmp_path):
    from runner.run import run

    edges = run(make_config(*SMALL, "experiment=controlnet_canny", "metrics=[edge_f1]"), tmp_path / "canny")
    assert 0 <= edges["images"][0]["metrics"]["edge_f1"] <= 1
    control = Image.open(tmp_path / "canny" / edges["inputs"]["control_image"])
    output = Image.open(tmp_path / "canny" / edges["images"][0]["file"])
    expected = metrics.edge_f1(metrics.canny_edges(output, (100, 200)), np.asarray(control.convert("L")) > 127, 2)
    assert edges["images"][0]["metrics"]["edge_f1"] == pytest.approx(expected, abs=1e-6)
    psnr = run(make_config("zoo=tiny", "experiment=inpaint", "metrics=[masked_psnr]"), tmp_path / "inpaint")
    assert 5 < psnr["images"][0]["metrics"]["masked_psnr"] < 100
