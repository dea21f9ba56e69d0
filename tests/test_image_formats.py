"""outputs.format=png|webp|jpeg and outputs.keep=all|thumbnails: WebP and JPEG carry AUTOMATIC1111's
`parameters` where A1111 reads them (EXIF UserComment) and the record `lcm-reproduce` re-makes them
from; a sweep that keeps thumbnails only still has its report, rebuilds it and resumes."""
import io
import json
import re

import numpy as np
import piexif
import piexif.helper
import pytest
from PIL import Image

from benchmarks import bench
from runner.commands import lcm_grid, lcm_run
from runner.commands.lcm_reproduce import reproduce
from runner.config.job_plan import plan_job
from runner.engine.state import ENGINE
from runner.errors import UserError
from runner.outputs import thumbnails
from runner.outputs.png_metadata import parameters_text, read_image_metadata
from runner.run import run
from tests.helpers import count_image_opens, make_config
from tests.test_metadata import lcm_reproduce

PROMPT = "papercut, a cute fox: blue ünïcode"  # a comma, a colon and non-ASCII text, kept through UTF-16
JOB = ("zoo=tiny", "sampling.height=64", "sampling.width=64", "sampling.steps=2", "sampling.seed=3",
       f"sampling.prompt='{PROMPT}'", "sampling.negative_prompt='blurry, dark'")
FORMATS = {"png": ".png", "webp": ".webp", "jpeg": ".jpg"}


def a1111_read_info_from_image(image):
    """AUTOMATIC1111's modules/images.py `read_info_from_image`, its EXIF branch as the webui has it."""
    items = (image.info or {}).copy()
    geninfo = items.pop("parameters", None)
    if "exif" in items:
        exif_data = items["exif"]
        try:
            exif = piexif.load(exif_data)
        except OSError:
            exif = None
        exif_comment = (exif or {}).get("Exif", {}).get(piexif.ExifIFD.UserComment, b"")
        try:
            exif_comment = piexif.helper.UserComment.load(exif_comment)
        except ValueError:
            exif_comment = exif_comment.decode("utf8", errors="ignore")
        if exif_comment:
            items["exif comment"] = exif_comment
            geninfo = exif_comment
    return geninfo, items


def decoded(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def jobs(tiny_zoo, tmp_path_factory):
    """The same one-image job written as PNG (the default), WebP and JPEG, made in-process with run()."""
    root = tmp_path_factory.mktemp("formats")
    ENGINE.reset()
    made = {"png": run(make_config(*JOB), root / "png")}  # no outputs key: the default
    for name in ("webp", "jpeg"):
        made[name] = run(make_config(*JOB, f"outputs.format={name}"), root / name)
    ENGINE.reset()
    return root, made


def test_webp_and_jpeg_carry_the_parameters_a1111_reads_and_our_record(jobs):
    root, made = jobs
    png = root / "png" / made["png"]["images"][0]["file"]
    with Image.open(png) as image:
        expected = image.text["parameters"]
    assert expected.startswith(PROMPT + "\nNegative prompt: blurry, dark\nSteps: 2, Sampler: LCM,")
    for name in ("webp", "jpeg"):
        record = made[name]
        entry = record["images"][0]
        path = root / name / entry["file"]
        assert entry["file"] == "image_00_seed3" + FORMATS[name] and record["status"] == "ok"
        with Image.open(path) as image:
            assert image.format == name.upper()
            geninfo, _ = a1111_read_info_from_image(image)
            raw = piexif.load(image.info["exif"])["Exif"][piexif.ExifIFD.UserComment]
        assert raw.startswith(b"UNICODE\0"), "A1111's encoding: UNICODE, then UTF-16"
        assert geninfo == expected == parameters_text(record, entry)
        found = read_image_metadata(path)
        assert found["parameters"]["Prompt"] == PROMPT and found["parameters"]["Seed"] == "3"
        assert found["lcm-runner"]["config"] == record["config"] and found["lcm-runner"]["image"] == entry
        assert record["config"]["outputs"] == {"format": name, "quality": 90, "lossless": False, "keep": "all"}
        assert ("libwebp" if name == "webp" else "libjpeg") in record["versions"]
        # the pixels: the PNG's (the image as generated), encoded at the recorded quality
        encoded = io.BytesIO()
        with Image.open(png) as image:
            image.save(encoded, format=name.upper(), quality=90)
        assert np.array_equal(decoded(path), decoded(encoded))
        assert not np.array_equal(decoded(path), decoded(png)), "lossy"


def test_the_default_png_job_is_unchanged(jobs):
    root, made = jobs
    png = made["png"]
    assert [p.name for p in sorted((root / "png").iterdir())] == ["image_00_seed3.png", "run.json"]
    assert png["images"] == [{"file": "image_00_seed3.png", "seed": 3, "index": 0}]
    assert not {"libwebp", "libjpeg"} & set(png["versions"])
    with Image.open(root / "png" / "image_00_seed3.png") as image:
        assert set(image.text) == {"parameters", "lcm-runner"} and "exif" not in image.info
    # how images are stored is not what a job is: resuming with another format keeps finished jobs
    assert png["id"] == made["webp"]["id"] == made["jpeg"]["id"]


@pytest.mark.parametrize("setting,expected", [
    ("outputs.format=gif", ["outputs.format='gif'", "png, webp, jpeg"]),
    ("outputs.quality=0", ["outputs.quality=0", "1-100"]),
    ("outputs.keep=none", ["outputs.keep='none'", "all, thumbnails"]),
])
def test_bad_outputs_settings_name_the_key_and_value(setting, expected, tiny_zoo):
    with pytest.raises(UserError) as error:
        plan_job(make_config("zoo=tiny", setting))
    assert all(text in str(error.value) for text in expected), str(error.value)


def test_lossless_is_refused_for_a_format_without_it(tiny_zoo):
    with pytest.raises(UserError, match=r"outputs.lossless=true applies to outputs.format=webp only \(not jpeg\)"):
        plan_job(make_config("zoo=tiny", "outputs.format=jpeg", "outputs.lossless=true"))


@pytest.mark.slow
def test_lcm_reproduce_remakes_a_webp_and_a_jpeg(jobs, tiny_zoo, tmp_path):
    root, made = jobs
    webp = root / "webp" / "image_00_seed3.webp"
    done = lcm_reproduce(webp, "--out", tmp_path / "webp", cwd=tmp_path, zoo=tiny_zoo)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"Reproduced in {tmp_path / 'webp'}: image_00_seed3.webp (pixels identical to {webp})"
    assert np.array_equal(decoded(tmp_path / "webp" / "image_00_seed3.webp"), decoded(webp))

    jpeg = root / "jpeg" / "image_00_seed3.jpg"
    result = reproduce(jpeg, out=tmp_path / "jpeg")  # the same function, in this process
    done = result["reproduced_from"]
    assert (done["new_file"], done["pixels_equal"], done["max_difference"]) == ("image_00_seed3.jpg", True, 0)
    assert result["config"]["outputs"]["format"] == "jpeg" and result["versions"]["libjpeg"]
    assert np.array_equal(decoded(tmp_path / "jpeg" / "image_00_seed3.jpg"), decoded(jpeg))


@pytest.mark.slow
def test_a_sweep_that_keeps_thumbnails_has_its_report_and_resumes(tiny_zoo, tmp_path, monkeypatch, capsys):
    opened = count_image_opens(monkeypatch, thumbnails)
    monkeypatch.setattr(thumbnails, "THUMB", 40)  # thumbnails smaller than the tiny images
    sweep = tmp_path / "sweep"
    args = ["experiment=controlnet_canny", "zoo=tiny", "device=cpu", "sampling.height=48", "sampling.width=64",
            "sampling.steps=1,2", "sampling.seed=0,1", "outputs.format=jpeg", "outputs.keep=thumbnails",
            f"hydra.sweep.dir={sweep}"]
    thumbnails.forget()
    bench.run_hydra(lcm_run.run_app, args)
    at_the_end = (sweep / "contact_sheet.png").read_bytes()
    assert opened == [], "the end-of-sweep sheet used the thumbnails kept as they were written"

    # what is kept: a thumbnail per image (the sheet's cell size), run.json and Hydra's files; no
    # full image, no conditioning input
    records = {job.name: json.loads((job / "run.json").read_text()) for job in sorted(sweep.glob("[0-9]*"))}
    assert len(records) == 4 and {r["status"] for r in records.values()} == {"ok"}
    for name, record in records.items():
        (entry,) = record["images"]
        assert entry["file"] == f"image_00_seed{entry['seed']}_thumb.jpg" and entry["thumbnail"] is True
        assert record["inputs"] == {}
        kept = sorted(p.name for p in (sweep / name).iterdir())
        assert kept == [".hydra", entry["file"], "lcm-run.log", "run.json"], kept
        with Image.open(sweep / name / entry["file"]) as image:
            assert (image.format, image.size) == ("JPEG", (40, 30))
        assert read_image_metadata(sweep / name / entry["file"])["lcm-runner"]["image"] == entry
    assert not list(sweep.rglob("image_??_seed?.jpg")) and not list(sweep.rglob("inputs"))

    # the report: sheet, summary and gallery name the thumbnails, and lcm-grid rebuilds the same sheet
    summary = (sweep / "summary.csv").read_text().splitlines()
    assert len(summary) == 5 and all(re.search(r",\d/image_00_seed\d_thumb\.jpg,ok,", line) for line in summary[1:])
    gallery = re.search(r'<script type="application/json" id="gallery-data">(.*?)</script>',
                        (sweep / "index.html").read_text(), re.S)
    rows = json.loads(gallery.group(1))["rows"]
    assert len(rows) == 4 and all(row["thumb"] == row["file"] and (sweep / row["file"]).is_file() for row in rows)
    assert not (sweep / "thumbnails").exists(), "the gallery shows the kept thumbnails, no copy of them"
    opened.clear()
    assert lcm_grid.main([str(sweep)]) == 0
    assert (sweep / "contact_sheet.png").read_bytes() == at_the_end, "the same sheet from the files on disk"
    assert len(opened) == 4, "lcm-grid read each thumbnail from disk"

    # scores of thumbnails would not be the images': refused
    capsys.readouterr()
    assert lcm_grid.main([str(sweep), "--metrics", "edge_f1"]) == 2
    assert "kept thumbnails only (outputs.keep=thumbnails)" in capsys.readouterr().err

    # resume: every job is recognised as finished and nothing is rewritten
    before = {p: p.read_bytes() for p in sweep.rglob("*_thumb.jpg")}
    bench.run_hydra(lcm_run.run_app, args)
    assert [json.loads((sweep / n / "run.json").read_text())["status"] for n in records] == ["skipped"] * 4
    assert {p: p.read_bytes() for p in sweep.rglob("*_thumb.jpg")} == before

    # lcm-reproduce of a thumbnail makes the full image and proves it by its thumbnail
    thumb = sweep / "3" / records["3"]["images"][0]["file"]
    result = reproduce(thumb, out=tmp_path / "again")
    done = result["reproduced_from"]
    assert done["new_file"] == thumb.name.replace("_thumb", "") and done["compared_with"] == thumb.name
    assert done["pixels_equal"] is True
    with Image.open(tmp_path / "again" / done["new_file"]) as image:
        assert (image.format, image.size) == ("JPEG", (64, 48))
    assert result["config"]["outputs"]["keep"] == "all" and (tmp_path / "again" / "inputs").is_dir()


def test_jobs_that_differ_only_in_how_images_are_stored_are_not_batched_together(tiny_zoo):
    from runner.config.schema import job_identity
    from runner.sweep.batching import batch_key

    png, webp, other_seed = (make_config(*JOB, *extra) for extra in ((), ("outputs.format=webp",), ("sampling.seed=4",)))
    assert job_identity(png) == job_identity(webp), "one job, stored two ways"
    assert batch_key(png) != batch_key(webp), "so never twice in one call"
    assert batch_key(png) == batch_key(other_seed)
