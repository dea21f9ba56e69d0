"""PNG metadata: the AUTOMATIC1111 `parameters` text and the `lcm-runner` JSON round-trip, and
`lcm-reproduce` re-renders an image from them, pixel for pixel, while refusing hostile metadata."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tests.helpers import make_config
from runner.outputs.png_metadata import read_png_metadata
from runner.run import run
from runner.engine.state import ENGINE

# AUTOMATIC1111's own pattern for the `Key: value, ...` line, copied verbatim from the webui.
A1111_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')

PROMPT = "papercut, a cute fox: blue"  # a comma and a colon, which the A1111 text must keep
NEGATIVE = "blurry, dark"
JOB = ("experiment=lora_papercut", "zoo=tiny", "sampling.height=64", "sampling.width=64",
       "sampling.num_images=2", f"sampling.prompt='{PROMPT}'", f"sampling.negative_prompt='{NEGATIVE}'")


@pytest.fixture(scope="module")
def job(tiny_zoo, tmp_path_factory):
    """One tiny two-image job (LCM + papercut as live adapters), made in-process with run()."""
    folder = tmp_path_factory.mktemp("original") / "job"
    ENGINE.reset()
    record = run(make_config(*JOB), folder)
    ENGINE.reset()  # later tests count cache misses from a clean cache
    assert record["status"] == "ok"
    return folder, record


def pixels(path):
    with Image.open(path) as image:
        return image.mode, image.size, np.asarray(image).copy()


def same_pixels(a, b):
    (mode_a, size_a, array_a), (mode_b, size_b, array_b) = pixels(a), pixels(b)
    return mode_a == mode_b and size_a == size_b and np.array_equal(array_a, array_b)


def lcm_reproduce(*args, cwd, zoo):
    """The installed console script, as a user runs it."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", LCM_RUNNER_ZOO=str(zoo))
    env.pop("HYDRA_FULL_ERROR", None)
    script = Path(sys.executable).with_name("lcm-reproduce")
    return subprocess.run([str(script), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------
# Round trip
# ------------------------------------------------------------------------------------------------


def test_the_json_chunk_holds_the_config_and_image_of_run_json(job):
    folder, _ = job
    record = json.loads((folder / "run.json").read_text())
    assert len(record["images"]) == 2
    for entry in record["images"]:
        found = read_png_metadata(folder / entry["file"])["lcm-runner"]
        assert found["config"] == record["config"]
        assert found["image"] == entry
        assert found["overrides"] == record["overrides"]
        assert found["versions"] == record["versions"]


def test_the_a1111_text_parses_back_with_a1111s_regex(job):
    folder, _ = job
    record = json.loads((folder / "run.json").read_text())
    call = record["call"]
    lora = ", ".join(f"{a['name']}: {a['weight']}" for a in record["adapters"])
    assert lora == "lcm: 1.0, papercut: 0.8"
    for entry in record["images"]:
        with Image.open(folder / entry["file"]) as image:
            text = image.text["parameters"]
        *prompt_lines, last = text.split("\n")
        assert prompt_lines == [PROMPT, f"Negative prompt: {NEGATIVE}"]
        fields = {k: json.loads(v) if v.startswith('"') else v for k, v in A1111_RE_PARAM.findall(last)}
        expected = {
            "Steps": str(call["num_inference_steps"]), "Sampler": "LCM", "CFG scale": str(call["guidance_scale"]),
            "Seed": str(entry["seed"]), "Size": f"{call['width']}x{call['height']}",
            "Model": "stable-diffusion-xl-base-1.0", "Lora": lora, "Lora fused": "False",
        }
        assert {k: fields.get(k) for k in expected} == expected
        assert fields["Version"].startswith("lcm-runner ")
        # read_png_metadata parses it the way the webui does: prompt, negative prompt, fields.
        parsed = read_png_metadata(folder / entry["file"])["parameters"]
        assert parsed["Prompt"] == PROMPT and parsed["Negative prompt"] == NEGATIVE
        assert {k: parsed[k] for k in expected} == expected
        assert (parsed["Size-1"], parsed["Size-2"]) == ("64", "64")


# ------------------------------------------------------------------------------------------------
# lcm-reproduce
# ------------------------------------------------------------------------------------------------


def test_reproduce_renders_identical_pixels_into_a_new_folder(job, tiny_zoo, tmp_path):
    folder, original = job
    before = snapshot(folder)
    image = folder / original["images"][1]["file"]
    done = lcm_reproduce(image, cwd=tmp_path, zoo=tiny_zoo)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.strip().splitlines()
    new_folder, new_file = re.match(r"Reproduced in (.+): (\S+\.png) \(pixels identical to ", line).groups()
    new_folder = Path(new_folder)
    assert new_folder.parent == tmp_path / "outputs" / "reproduce"  # <paths.root>/reproduce/<time>
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", new_folder.name)
    assert new_file == original["images"][1]["file"]
    assert same_pixels(new_folder / new_file, image)  # the image itself, bit for bit
    assert same_pixels(new_folder / original["images"][0]["file"], folder / original["images"][0]["file"])
    record = json.loads((new_folder / "run.json").read_text())
    assert record["status"] == "ok"
    assert record["images"] == original["images"]
    assert record["config"]["paths"]["output_dir"] == str(new_folder)
    strip = lambda config: {**config, "paths": {**config["paths"], "output_dir": None}}  # noqa: E731
    assert strip(record["config"]) == strip(original["config"])
    assert record["reproduced_from"]["image"] == str(image.resolve())
    assert record["reproduced_from"]["pixels_equal"] is True
    assert snapshot(folder) == before, "the original job folder is never touched"


def test_an_override_changes_the_image_and_is_recorded(job, tiny_zoo, tmp_path):
    folder, original = job
    image = folder / original["images"][1]["file"]
    out = tmp_path / "steps2"
    done = lcm_reproduce(image, "sampling.steps=2", "--out", out, cwd=tmp_path, zoo=tiny_zoo)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"Reproduced in {out}: {image.name} (pixels differ from {image})"
    assert not same_pixels(out / image.name, image)
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["sampling"]["steps"] == 2 and record["call"]["num_inference_steps"] == 2
    assert record["reproduced_from"]["overrides"] == ["sampling.steps=2"]
    changed = {**original["config"], "sampling": {**original["config"]["sampling"], "steps": 2},
               "paths": {**original["config"]["paths"], "output_dir": str(out)}}
    assert record["config"] == changed
    with Image.open(out / image.name) as new:
        assert "Steps: 2," in new.text["parameters"]


def _hostile_png(source, target, edit):
    """A copy of `source` (same pixels) whose lcm-runner JSON went through `edit`."""
    with Image.open(source) as image:
        record = json.loads(image.text["lcm-runner"])
        edit(record)
        info = PngInfo()
        info.add_text("parameters", image.text["parameters"])
        info.add_text("lcm-runner", json.dumps(record))
        image.save(target, pnginfo=info)
    return target


def _set(path, value):
    def edit(record):
        node = record["config"]
        *parents, last = path.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return edit


def _batch(members):
    def edit(record):
        record["batch"] = {"leader": record["id"], "jobs": 2, "images": 4, "members": members}
    return edit


HOSTILE = {
    "os_system_scheduler": (_set("scheduler._target_", "os.system"),
                            ["scheduler._target_='os.system'", "diffusers.LCMScheduler.from_config"]),
    "unknown_top_level_key": (_set("evil", {"x": 1}), ["evil", "does not fit the run schema"]),
    "env_interpolation": (_set("sampling.prompt", "${oc.env:HOME}"),
                          ["sampling.prompt='${oc.env:HOME}'", "interpolation"]),
    "target_under_model": (_set("model._target_", "builtins.exec"), ["model._target_", "instantiation key"]),
    "nested_target_in_scheduler": (_set("scheduler.timestep_spacing", {"_target_": "os.system", "_args_": ["id"]}),
                                   ["scheduler.timestep_spacing._target_", "scheduler.timestep_spacing._args_"]),
    "absolute_root": (_set("paths.root", "/tmp"), ["paths.root='/tmp'", "--out"]),
    "pickle_switch": (_set("allow_pickle", True), ["allow_pickle=True", "execute code"]),
    "batch_member_interpolation": (_batch([{"seed": 0, "prompt": "${oc.env:HOME}", "negative_prompt": None}] * 2),
                                   ["malformed batch.members", "edited"]),
    "batch_member_shape": (_batch([{"seed": "0"}, {"seed": 1, "prompt": "a fox", "negative_prompt": None}]),
                           ["malformed batch.members", "seed, prompt, negative_prompt"]),
}


def _make_input(kind, source, folder):
    if kind in HOSTILE:
        return _hostile_png(source, folder / f"{kind}.png", HOSTILE[kind][0])
    if kind == "no_metadata":
        with Image.open(source) as image:
            image.save(folder / "plain.png")  # Pillow drops the text chunks unless asked
        return folder / "plain.png"
    if kind == "not_a_png":
        (folder / "notes.png").write_text("not an image\n")
        return folder / "notes.png"
    if kind == "jpeg":
        with Image.open(source) as image:
            image.convert("RGB").save(folder / "image.jpg", format="JPEG")
        return folder / "image.jpg"
    if kind == "gif":
        with Image.open(source) as image:
            image.save(folder / "image.gif", format="GIF")
        return folder / "image.gif"
    return folder / "missing.png"


REFUSED = {
    **{kind: expected for kind, (_, expected) in HOSTILE.items()},
    "no_metadata": ["plain.png has no lcm-runner metadata", "not written by lcm-run"],
    "not_a_png": ["notes.png is not an image"],
    "jpeg": ["image.jpg has no lcm-runner metadata", "stripped its metadata"],  # converted: metadata dropped
    "gif": ["image.gif is a GIF image", "PNG, WebP or JPEG"],
    "missing": ["missing.png does not exist"],
}


@pytest.mark.parametrize("kind", list(REFUSED))
def test_hostile_or_foreign_input_is_refused_clearly_and_writes_nothing(kind, job, tiny_zoo, tmp_path):
    folder, original = job
    inputs, cwd = tmp_path / "inputs", tmp_path / "cwd"
    inputs.mkdir()
    cwd.mkdir()
    image = _make_input(kind, folder / original["images"][1]["file"], inputs)
    before = snapshot(inputs)
    done = lcm_reproduce(image, cwd=cwd, zoo=tiny_zoo)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.startswith("lcm-reproduce: error: ") and done.stderr.count("\n") == 1, done.stderr
    for text in REFUSED[kind]:
        assert text in done.stderr, done.stderr
    assert not any(cwd.iterdir()), "nothing is written"
    assert snapshot(inputs) == before


@pytest.mark.slow
def test_an_image_of_a_batched_sweep_is_remade_in_the_call_that_made_it(tiny_zoo, tmp_path):
    """A sweep's seeds share one call; alone, the same job adds in another order and its pixels can
    move by a level (they do for this job at 256²). The PNG names the call's jobs, and lcm-reproduce
    makes the same call again, in its order."""
    from runner.commands import lcm_run
    from benchmarks.bench import run_hydra
    from runner.commands.lcm_reproduce import reproduce

    sweep = tmp_path / "sweep"
    ENGINE.reset()
    run_hydra(lcm_run.run_app, ["experiment=sweep_steps_guidance", "zoo=tiny", "sampling.steps=2",
                            "sampling.guidance_scale=0", f"hydra.sweep.dir={sweep}"])
    original = json.loads((sweep / "1" / "run.json").read_text())
    prompt = original["config"]["sampling"]["prompt"]
    assert original["batch"]["members"] == [{"seed": seed, "prompt": prompt, "negative_prompt": None}
                                            for seed in (0, 1)]
    image = sweep / "1" / original["images"][0]["file"]
    assert read_png_metadata(image)["lcm-runner"]["batch"] == original["batch"]

    done = lcm_reproduce(image, "--out", tmp_path / "again", cwd=tmp_path, zoo=tiny_zoo)
    assert done.returncode == 0 and "(pixels identical to" in done.stdout, done.stdout + done.stderr
    assert "re-making the one call of 2 jobs" in done.stderr
    again = json.loads((tmp_path / "again" / "run.json").read_text())
    assert again["batch"]["members"] == original["batch"]["members"] and again["batch"]["leader"] == again["id"]
    assert same_pixels(tmp_path / "again" / original["images"][0]["file"], image)

    alone = reproduce(image, ["sampling.seed=7"], tmp_path / "seed7")  # not one of the call's jobs
    assert "batch" not in alone and alone["images"][0]["seed"] == 7


@pytest.mark.parametrize("args,expected", [
    (["zoo=tiny"], ["zoo=tiny names the config group", "dotted keys"]),
    (["sampling.prompt='${oc.env:HOME}'"], ["interpolation", "overrides"]),
    (["sampling.stepz=4"], ["sampling.stepz"]),
    (["sampling.steps=0"], ["sampling.steps=0", "at least 1"]),
    (["sampling.num_images=1"], ["leaves out image 1"]),
    (["sampling.steps=2,4"], ["is a sweep"]),
    (["+scheduler.no_such_option=1"], ["scheduler.no_such_option", "LCMScheduler"]),
])
def test_bad_overrides_are_refused_and_write_nothing(args, expected, job, tiny_zoo, tmp_path):
    folder, original = job
    done = lcm_reproduce(folder / original["images"][1]["file"], *args, cwd=tmp_path, zoo=tiny_zoo)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    for text in expected:
        assert text in done.stderr, done.stderr
    assert not any(tmp_path.iterdir())


def test_the_original_folder_or_a_used_one_is_never_written(job, tiny_zoo, tmp_path):
    folder, original = job
    before = snapshot(folder)
    image = folder / original["images"][1]["file"]
    done = lcm_reproduce(image, "--out", folder, cwd=tmp_path, zoo=tiny_zoo)
    assert done.returncode == 2 and "folder of the image's own job" in done.stderr, done.stderr
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine\n")
    done = lcm_reproduce(image, "--out", used, cwd=tmp_path, zoo=tiny_zoo)
    assert done.returncode == 2 and "already exists" in done.stderr, done.stderr
    assert snapshot(folder) == before and [p.name for p in used.iterdir()] == ["notes.txt"]
