"""Sweep reports (summary.csv, contact sheets, index.html) on fake sweep folders: no model runs.

Each fake image is one flat colour picked by its job and index, so a cell of a contact sheet can
be traced back to the job that should fill it.
"""
import copy
import csv
import itertools
import json
import re
import shutil
import subprocess
import sys
import threading
from html import escape
from pathlib import Path

import pytest
from PIL import Image

from runner.commands import lcm_grid
from runner.report import contact_sheets
from runner.report import build_report
from runner.report.sweep_folder import load_sweep, ordered_values

CHROMIUM = Path("/usr/bin/chromium")
HOSTILE = "<script>alert(1)</script>"
BASE_CONFIG = {
    "model": {"source": "stabilityai/stable-diffusion-xl-base-1.0", "variant": None},
    "scheduler": {"_target_": "diffusers.LCMScheduler.from_config", "_partial_": True},
    "lora": {"lcm": {"source": "latent-consistency/lcm-lora-sdxl",
                     "weight_name": "pytorch_lora_weights.safetensors", "weight": 1.0}},
    "fuse_lora": True,
    "conditioning": {"kind": "none"},
    "sampling": {"prompt": "a paper fox", "negative_prompt": None, "steps": 4, "guidance_scale": 0.0,
                 "seed": 0, "num_images": 1, "height": 300, "width": 400},
    "device": {"type": "cpu", "dtype": "auto"},
    "zoo": {"name": "tiny", "twins": {}},
    "paths": {"root": "outputs", "output_dir": None},
}
# What a config group choice puts in the config (the override names the choice, not the keys).
GROUP_CHOICES = {"scheduler": {
    "lcm": {"_target_": "diffusers.LCMScheduler.from_config", "_partial_": True},
    "dpmpp_2m": {"_target_": "diffusers.DPMSolverMultistepScheduler.from_config", "_partial_": True,
                 "algorithm_type": "dpmsolver++", "solver_order": 2},
}}

# What an experiment choice sets (`# @package _global_`): keys all over the config, none under `experiment`.
EXPERIMENTS = {"experiment": {
    "t2i": {"sampling.prompt": "a cyborg", "sampling.steps": 4},
    "inpaint": {"sampling.prompt": "a tiger", "sampling.steps": 4, "sampling.seed": 42,
                "model.source": "diffusers/stable-diffusion-xl-1.0-inpainting-0.1", "conditioning.kind": "inpaint",
                "conditioning.strength": 0.99},
    "controlnet_canny": {"sampling.prompt": "the mona lisa", "sampling.steps": 5, "conditioning.kind": "controlnet",
                         "conditioning.conditioning_scale": 0.5},
}}


def colour(job, index=0):
    return (20 + 30 * job % 200, 200 - 15 * job % 180, 60 + 90 * index)


def fake_sweep(root, axes, *, failed=(), rejected=(), killed=(), size=(400, 300), **sampling):
    """A sweep folder as `lcm-run -m` leaves it: one job per combination of `axes` (key -> values),
    the first key varying slowest as in Hydra's basic sweeper. `failed` jobs ran and raised,
    `rejected` ones left the minimal record, `killed` ones no run.json at all."""
    for number, combo in enumerate(itertools.product(*axes.values())):
        job = root / str(number)
        job.mkdir(parents=True)
        overrides = ["zoo=tiny", *(f"{key}={value}" for key, value in zip(axes, combo))]
        if number in killed:  # Hydra had saved its overrides before the job started
            (job / ".hydra").mkdir()
            (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
            continue
        if number in rejected:
            error = "UserError: steps must be at least 1"
            write_record(job, {"status": "failed", "overrides": overrides, "error": error})
            continue
        config = copy.deepcopy(BASE_CONFIG)
        config["sampling"].update(sampling)
        config["paths"]["output_dir"] = str(job)
        for key, value in zip(axes, combo):
            set_dotted(config, key, value)
        s = config["sampling"]
        images = [] if number in failed else [
            {"file": f"image_{i:02d}_seed{s['seed'] + i}.png", "seed": s["seed"] + i, "index": i}
            for i in range(s["num_images"])]
        for image in images:
            Image.new("RGB", size, colour(number, image["index"])).save(job / image["file"])
        write_record(job, {
            "status": "failed" if number in failed else "ok", "config": config, "overrides": overrides,
            "pipeline": "StableDiffusionXLPipeline", "images": images, "timings": {"total": 1.25 + number},
            "error": f"RuntimeError: out of memory {HOSTILE}" if number in failed else None})
    return root


def set_dotted(config, key, value):
    if key in EXPERIMENTS:
        for dotted, setting in EXPERIMENTS[key][value].items():
            set_dotted(config, dotted, setting)
        return
    if key in GROUP_CHOICES:
        config[key] = copy.deepcopy(GROUP_CHOICES[key][value])
        return
    *parents, leaf = key.split(".")
    for parent in parents:
        config = config.setdefault(parent, {})
    config[leaf] = value


def write_record(job, record):
    (job / "run.json").write_text(json.dumps(record, indent=2))


def labels(sweep_dir):
    return [p.label for p in load_sweep(sweep_dir).params]


def cell_pixel(sheet, column, row, cell=(256, 192)):
    """A pixel near the top left corner of a cell (away from a placeholder's centred text)."""
    left = contact_sheets.LEFT_W + contact_sheets.GAP + column * (cell[0] + contact_sheets.GAP)
    top = contact_sheets.TITLE_H + contact_sheets.TOP_H + row * (cell[1] + contact_sheets.GAP)
    return sheet.getpixel((left + 3, top + 3))


def run_lcm_grid(*args):
    script = Path(sys.executable).with_name("lcm-grid")
    return subprocess.run([str(script), *map(str, args)], capture_output=True, text=True, timeout=60)


# -- swept parameters and summary.csv ---------------------------------------------------------
def test_swept_parameters_follow_the_command_line_order(tmp_path):
    fake_sweep(tmp_path, {"sampling.guidance_scale": [0.0, 1.5], "lora.lcm.weight": [1.0, 0.5],
                          "sampling.steps": [4, 2]})
    # guidance before steps as typed; the output folders differ too but are not a parameter
    assert labels(tmp_path) == ["sampling.guidance_scale", "lora.lcm.weight", "sampling.steps"]


def test_a_config_group_is_one_parameter_and_unnamed_keys_come_last_sorted(tmp_path):
    fake_sweep(tmp_path, {"scheduler": ["lcm", "dpmpp_2m"], "sampling.steps": [2, 4]})
    record = json.loads((tmp_path / "3" / "run.json").read_text())
    record["config"]["model"]["variant"] = "fp16"  # differs, but no override names it
    write_record(tmp_path / "3", record)
    sweep = load_sweep(tmp_path)
    # scheduler=dpmpp_2m changes _target_, algorithm_type and solver_order: one parameter, by choice
    assert [p.label for p in sweep.params] == ["scheduler", "sampling.steps", "model.variant"]
    assert ordered_values(row.values["scheduler"] for row in sweep.rows) == ["lcm", "dpmpp_2m"]  # as typed


def test_a_swept_experiment_is_one_parameter_for_every_key_it_decides(tmp_path):
    fake_sweep(tmp_path, {"experiment": ["t2i", "inpaint", "controlnet_canny"], "sampling.guidance_scale": [0.0, 1.5]})
    record = json.loads((tmp_path / "5" / "run.json").read_text())
    record["config"]["sampling"]["negative_prompt"] = "blurry"  # differs, but the experiment does not decide it
    write_record(tmp_path / "5", record)
    sweep = load_sweep(tmp_path)
    # prompt, steps, seed, model and conditioning keys follow the experiment: folded into it
    assert [p.label for p in sweep.params] == ["experiment", "sampling.guidance_scale", "sampling.negative_prompt"]
    assert [(row.values["experiment"], row.seed) for row in sweep.rows][::2] == [("t2i", 0), ("inpaint", 42),
                                                                                ("controlnet_canny", 0)]
    written = build_report(tmp_path, x="experiment", y="sampling.guidance_scale")
    assert [path.name for path in written["contact_sheets"]] == [
        "contact_sheet_sampling.negative_prompt=None.png", "contact_sheet_sampling.negative_prompt=blurry.png"]
    sheet = Image.open(written["contact_sheets"][0]).convert("RGB")
    assert [cell_pixel(sheet, column, 0) for column in range(3)] == [colour(0), colour(2), colour(4)]


def test_the_sheets_are_the_combinations_present_however_many_keys_vary(tmp_path):
    """Forty keys that no override names vary together across two jobs: two sheets, drawn at once
    (every combination of their values would be 2^40 sheets to look for)."""
    fake_sweep(tmp_path, {"sampling.steps": [2, 4]})
    for job in (0, 1):
        record = json.loads((tmp_path / str(job) / "run.json").read_text())
        record["config"]["extra"] = {f"key{i:02d}": job for i in range(40)}
        write_record(tmp_path / str(job), record)
    done = []
    worker = threading.Thread(target=lambda: done.append(build_report(tmp_path)), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert done, "the report did not finish within a minute"
    sheets = done[0]["contact_sheets"]
    assert len(sheets) == 2 and all(path.is_file() for path in sheets)
    # named by their values, shortened with a hash of the whole where that is too long for a file name
    for path, job in zip(sheets, (0, 1)):
        assert path.name.startswith(f"contact_sheet_extra.key01={job}_extra.key02={job}_")
        assert len(path.name) <= 220 and re.search(r"-[0-9a-f]{8}\.png$", path.name)


def test_each_image_is_a_row_with_its_own_seed(tmp_path):
    fake_sweep(tmp_path, {"sampling.steps": [2, 4]}, num_images=2, seed=7)
    sweep = load_sweep(tmp_path)
    assert [p.label for p in sweep.params] == ["sampling.steps", "seed"]
    assert [(row.job, row.values["sampling.seed"], row.file) for row in sweep.rows] == [
        ("0", 7, "0/image_00_seed7.png"), ("0", 8, "0/image_01_seed8.png"),
        ("1", 7, "1/image_00_seed7.png"), ("1", 8, "1/image_01_seed8.png")]


def test_summary_csv_has_a_row_per_image_and_per_job_without_images(tmp_path):
    fake_sweep(tmp_path, {"sampling.steps": [1, 2, 0], "sampling.seed": [0, 1]},
               failed={2}, rejected={4}, killed={5})
    written = build_report(tmp_path)
    with open(written["summary"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["job", "sampling.steps", "seed", "file", "status", "time", "error"]
    assert rows[0] == {"job": "0", "sampling.steps": "1", "seed": "0", "file": "0/image_00_seed0.png",
                       "status": "ok", "time": "1.25", "error": ""}
    assert [(r["job"], r["sampling.steps"], r["seed"], r["status"], r["file"]) for r in rows[2:]] == [
        ("2", "2", "0", "failed", ""), ("3", "2", "1", "ok", "3/image_00_seed1.png"),
        ("4", "0", "0", "failed", ""),  # rejected before running: values from its overrides
        ("5", "0", "1", "missing", "")]  # killed: values from Hydra's overrides.yaml
    assert rows[4]["error"] == "UserError: steps must be at least 1"


# -- contact sheets ---------------------------------------------------------------------------
def test_a_3x2_sweep_makes_one_sheet_of_downscaled_thumbnails(tmp_path):
    fake_sweep(tmp_path, {"sampling.steps": [8, 2, 4], "sampling.guidance_scale": [1.5, 0.0]}, size=(400, 300))
    sheets = build_report(tmp_path)["contact_sheets"]
    assert sheets == [tmp_path / "contact_sheet.png"]
    sheet = Image.open(sheets[0]).convert("RGB")
    cell = (256, 192)  # 400x300 fitted into 256 px
    assert sheet.size == (contact_sheets.LEFT_W + 3 * (cell[0] + contact_sheets.GAP) + contact_sheets.GAP,
                          contact_sheets.TITLE_H + contact_sheets.TOP_H + 2 * (cell[1] + contact_sheets.GAP) + contact_sheets.GAP)
    # numeric order along both axes: steps 2, 4, 8 across; guidance 0.0, 1.5 down
    job = {(steps, guidance): n for n, (steps, guidance) in enumerate(itertools.product([8, 2, 4], [1.5, 0.0]))}
    for column, steps in enumerate([2, 4, 8]):
        for row, guidance in enumerate([0.0, 1.5]):
            assert cell_pixel(sheet, column, row) == colour(job[(steps, guidance)])


def test_three_swept_parameters_make_a_sheet_per_value_of_the_third(tmp_path):
    fake_sweep(tmp_path, {"sampling.steps": [2, 4], "sampling.guidance_scale": [0.0], "sampling.seed": [0, 1],
                          "sampling.prompt": ["a fox", HOSTILE]})
    sheets = build_report(tmp_path, x="sampling.steps", y="seed")["contact_sheets"]
    assert len(sheets) == 2
    names = sorted(path.name for path in sheets)
    assert names[0].startswith("contact_sheet_sampling.prompt=a-fox-")
    for name in names:  # the prompt text is slugged and hashed, never raw
        assert re.fullmatch(r"contact_sheet_sampling\.prompt=[A-Za-z0-9._-]+-[0-9a-f]{8}\.png", name)
    assert not (tmp_path / "contact_sheet.png").exists()


def test_failed_rejected_and_killed_jobs_leave_grey_cells(tmp_path):
    fake_sweep(tmp_path, {"sampling.steps": [1, 2, 0], "sampling.seed": [0, 1]}, failed={1}, rejected={4}, killed={5})
    (tmp_path / "6").mkdir()  # a folder with nothing to say where it belongs: left off the sheet
    build_report(tmp_path)
    sheet = Image.open(tmp_path / "contact_sheet.png").convert("RGB")
    assert sheet.width == contact_sheets.LEFT_W + 3 * (256 + contact_sheets.GAP) + contact_sheets.GAP
    # x: steps 0, 1, 2 (jobs 4|5, 0|1, 2|3); y: seed 0, 1
    assert [cell_pixel(sheet, c, r) for r in (0, 1) for c in (0, 1, 2)] == [
        contact_sheets.PLACEHOLDER, colour(0), colour(2),
        contact_sheets.PLACEHOLDER, contact_sheets.PLACEHOLDER, colour(3)]


def test_no_swept_parameter_makes_a_single_cell(tmp_path):
    fake_sweep(tmp_path, {"sampling.steps": [4]})
    sheet = Image.open(build_report(tmp_path)["contact_sheets"][0])
    assert sheet.size == (contact_sheets.LEFT_W + 256 + 2 * contact_sheets.GAP, contact_sheets.TITLE_H + contact_sheets.TOP_H + 192 + 2 * contact_sheets.GAP)


def test_lcm_grid_swaps_the_axes(tmp_path):
    fake_sweep(tmp_path, {"sampling.steps": [2, 4, 8], "sampling.seed": [0, 1]})
    result = run_lcm_grid(tmp_path, "--x", "sampling.seed", "--y", "sampling.steps")
    assert result.returncode == 0, result.stderr
    sheet = Image.open(tmp_path / "contact_sheet.png").convert("RGB")
    assert sheet.size == (contact_sheets.LEFT_W + 2 * (256 + contact_sheets.GAP) + contact_sheets.GAP,
                          contact_sheets.TITLE_H + contact_sheets.TOP_H + 3 * (192 + contact_sheets.GAP) + contact_sheets.GAP)
    for row in range(3):  # job = 2 * steps index + seed index
        for column in range(2):
            assert cell_pixel(sheet, column, row) == colour(2 * row + column)
    assert {"summary.csv", "index.html"} <= {path.name for path in tmp_path.iterdir()}


def test_lcm_grid_names_the_valid_keys_and_refuses_a_folder_that_is_no_sweep(tmp_path, capsys):
    fake_sweep(tmp_path / "sweep", {"sampling.steps": [2, 4], "sampling.seed": [0, 1]})
    assert lcm_grid.main([str(tmp_path / "sweep"), "--x", "steps"]) == 2
    assert capsys.readouterr().err == (
        "lcm-grid: error: 'steps' is not a swept parameter of " + str(tmp_path / "sweep")
        + "; the swept parameters are: sampling.steps, seed (sampling.seed)\n")
    assert lcm_grid.main([str(tmp_path)]) == 2
    assert "is not a sweep folder" in capsys.readouterr().err
    assert not (tmp_path / "sweep" / "contact_sheet.png").exists()


# -- gallery ----------------------------------------------------------------------------------
def test_gallery_escapes_every_text_from_the_run(tmp_path):
    fake_sweep(tmp_path, {"sampling.negative_prompt": [HOSTILE, "blurry"]}, failed={1}, prompt=f"a fox {HOSTILE}")
    page = build_report(tmp_path)["gallery"].read_text()
    assert page.count("<script>") == 1 and page.count("</script>") == 2  # its own script and data, nothing from the run
    assert "alert(1)</script>" not in page
    assert "a fox &lt;script&gt;alert(1)&lt;/script&gt;" in page  # the shared prompt, as text
    assert f'<option value="{escape(HOSTILE)}">' in page  # the swept one, in the filter
    data = json.loads(re.search(r'<script type="application/json" id="gallery-data">(.*?)</script>', page, re.S)[1])
    assert data["params"][0]["values"] == [HOSTILE, "blurry"]  # in the JSON, escaped and read back whole
    assert data["rows"][1]["why"] == f"RuntimeError: out of memory {HOSTILE}"


@pytest.mark.slow
def test_gallery_opens_in_headless_chromium_and_shows_every_image(tmp_path):
    if not CHROMIUM.exists():
        pytest.fail("Chromium is needed to check the gallery in a browser: apt-get install -y chromium")
    sweep = fake_sweep(tmp_path / "sweep", {"sampling.steps": [2, 4, 8], "sampling.seed": [0, 1]},
                       failed={3}, prompt=HOSTILE, size=(64, 48))
    build_report(sweep)
    dom = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
         (sweep / "index.html").as_uri()],
        capture_output=True, text=True, timeout=60).stdout
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
    assert re.search(r'<body data-images="5" data-loaded="5"', dom), dom[:2000]
    assert len(re.findall(r'<img class="thumb"[^>]*data-loaded="yes"', dom)) == 5
    assert "5 of 6 shown" not in dom and "6 of 6 shown" in dom  # the script ran; the failed job shows
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom


def test_reports_never_import_torch():
    code = "import sys, runner.report, runner.report.contact_sheets; assert not {'torch', 'diffusers'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_sheet_longer_than_the_limit_is_split_into_pages_and_rebuilt_whole(tmp_path, monkeypatch):
    sweep = fake_sweep(tmp_path / "sweep", {"sampling.steps": [2, 4, 8], "sampling.seed": [0, 1, 2, 3, 4, 5]}, size=(64, 48))
    monkeypatch.setattr(contact_sheets, "MAX_SIDE", 600)
    written = build_report(sweep)["contact_sheets"]
    assert [path.name for path in written] == ["contact_sheet_p1.png", "contact_sheet_p2.png"]
    sizes = [Image.open(path).size for path in written]
    assert all(max(size) <= 600 for size in sizes) and sizes[0][0] == sizes[1][0]
    assert not (sweep / "contact_sheet.png").exists()
    monkeypatch.setattr(contact_sheets, "MAX_SIDE", 16384)
    assert [path.name for path in build_report(sweep)["contact_sheets"]] == ["contact_sheet.png"]
    assert not list(sweep.glob("contact_sheet_p*.png")), "pages of the earlier layout are removed"


def test_summary_and_cells_come_from_one_pass_over_the_records_without_reading_an_image(tmp_path, monkeypatch):
    from runner.report.cells import write_cells_csv
    from runner.report.summary_csv import write_summary_csv

    fake_sweep(tmp_path, {"sampling.steps": [1, 2], "sampling.seed": [0, 1]})
    for number, path in enumerate(sorted(tmp_path.glob("*/run.json"))):
        record = json.loads(path.read_text())
        record["images"][0]["metrics"] = {"clip_score": 20.0 + number}
        write_record(path.parent, record)
    sweep = load_sweep(tmp_path)  # the one pass: each run.json read once

    def no_image(*args, **kwargs):
        raise AssertionError("summary.csv and cells.csv are made from the records alone")

    monkeypatch.setattr(Image, "open", no_image)
    monkeypatch.setattr(Path, "read_text", no_image)  # nor a second read of a record
    summary, cells = write_summary_csv(sweep), write_cells_csv(sweep)
    monkeypatch.undo()
    assert [row["clip_score"] for row in csv.DictReader(summary.open())] == ["20.0", "21.0", "22.0", "23.0"]
    assert [row["sampling.steps"] for row in csv.DictReader(cells.open())] == ["2", "1"]
