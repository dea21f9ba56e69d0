"""lcm-run as a user runs it: one run, a sweep, and every user error (one paragraph, non-zero
exit, no traceback, nothing written)."""
import json

import pytest

from tests.helpers import lcm_run


def run_jsons(folder):
    return sorted(folder.glob("*/run.json"), key=lambda p: int(p.parent.name))


@pytest.mark.slow
def test_a_two_by_two_sweep_makes_four_job_folders_and_loads_the_base_once(tiny_zoo, tmp_path):
    sweep = tmp_path / "sweep"
    done = lcm_run("-m", "zoo=tiny", "sampling.steps=1,2", "sampling.seed=0,1", "sampling.height=64",
                   "sampling.width=64", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    files = run_jsons(sweep)
    assert [p.parent.name for p in files] == ["0", "1", "2", "3"]
    records = [json.loads(p.read_text()) for p in files]
    assert [r["status"] for r in records] == ["ok"] * 4
    assert [r["cache"]["base"] for r in records] == ["miss", "hit", "hit", "hit"]
    assert [r["adapters"][0]["cache"] for r in records] == ["miss", "hit", "hit", "hit"]
    grid = {(r["call"]["num_inference_steps"], r["images"][0]["seed"]) for r in records}
    assert grid == {(1, 0), (1, 1), (2, 0), (2, 1)}
    for path, record in zip(files, records):
        assert (path.parent / record["images"][0]["file"]).is_file()
        assert {f"sampling.steps={record['call']['num_inference_steps']}",
                f"sampling.seed={record['images'][0]['seed']}", "zoo=tiny"} <= set(record["overrides"])
    out = done.stdout + done.stderr
    # not a terminal: plain progress lines (the last one at the end), no line per job
    assert "progress: 4/4 jobs, 4 images" in out and "job 1/4" not in out
    assert f"Sweep results in {sweep}" in done.stdout
    assert (sweep / "contact_sheet.png").is_file() and (sweep / "index.html").is_file()
    assert len((sweep / "summary.csv").read_text().splitlines()) == 5


@pytest.mark.slow
def test_a_single_run_names_its_output_folder(tiny_zoo, tmp_path):
    done = lcm_run("zoo=tiny", "sampling.height=64", "sampling.width=64", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (folder,) = (tmp_path / "outputs" / "runs").iterdir()
    assert f"Images and run.json in {folder}" in done.stdout
    assert (folder / "image_00_seed0.png").is_file()
    assert json.loads((folder / "run.json").read_text())["status"] == "ok"


def assert_clean_user_error(done, tmp_path, *expected):
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    for text in expected:
        assert text in done.stderr, done.stderr
    assert not list(tmp_path.rglob("*.png")), "a failed run must not write images"
    assert not (tmp_path / "outputs").exists(), "a rejected run must not create its folder"


@pytest.mark.slow
@pytest.mark.parametrize("override,expected", [
    ("sampling.steps=0", ["sampling.steps=0", "at least 1"]),
    ("sampling.guidance_scale=-0.5", ["sampling.guidance_scale=-0.5"]),
    ("sampling.height=100", ["sampling.height=100", "multiple of 8"]),
    ("sampling.num_images=0", ["sampling.num_images=0"]),
    ("sampling.stepz=4", ["sampling.stepz"]),
    ("scheduler=nope", ["scheduler/nope", "lcm"]),
    ("model.source=/no/such/folder", ["model.source='/no/such/folder'", "does not exist"]),
])
def test_bad_input_is_one_clear_paragraph(override, expected, tmp_path):
    done = lcm_run("zoo=tiny", override, cwd=tmp_path)
    assert_clean_user_error(done, tmp_path, *expected)


@pytest.mark.slow
def test_uncached_hub_model_offline_is_named_with_the_way_out(tmp_path):
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    done = lcm_run(cwd=tmp_path, env_extra={"HF_HUB_CACHE": str(cache)})
    assert_clean_user_error(done, tmp_path, "stabilityai/stable-diffusion-xl-base-1.0", "hf download", "zoo=tiny")


@pytest.mark.slow
def test_a_bad_job_fails_alone_and_the_sweep_still_reports(tiny_zoo, tmp_path):
    sweep = tmp_path / "sweep"
    done = lcm_run("-m", "zoo=tiny", "sampling.steps=0,1", "sampling.height=64", "sampling.width=64",
                   "on_invalid=skip", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode != 0
    assert "1 of 2 jobs failed" in done.stderr and "Traceback" not in done.stderr
    bad, good = (json.loads(p.read_text()) for p in run_jsons(sweep))
    assert bad["status"] == "failed" and "sampling.steps=0" in bad["error"]
    assert good["status"] == "ok" and (sweep / "1" / good["images"][0]["file"]).is_file()
    assert not list((sweep / "0").glob("*.png"))
    assert (sweep / "summary.csv").is_file() and (sweep / "index.html").is_file()


@pytest.mark.slow
def test_plan_true_says_what_a_sweep_would_do_and_does_nothing(tmp_path):
    zoo = tmp_path / "not-built"  # nothing may load: the tiny zoo is never even built
    done = lcm_run("-m", "zoo=tiny", "sampling.steps=1,2", "sampling.seed=0,1", "sampling.num_images=2",
                   "plan=true", cwd=tmp_path, env_extra={"LCM_RUNNER_ZOO": str(zoo)})
    assert done.returncode == 0, done.stderr
    assert "Plan: 4 jobs, 8 images, 12 denoising steps, into" in done.stdout
    assert f"base stabilityai/stable-diffusion-xl-base-1.0 ({zoo / 'sdxl-base'}): loaded 1x" in done.stdout
    assert "LoRA lcm" in done.stdout and "loaded 1x" in done.stdout
    assert not zoo.exists() and not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_plan_true_lists_every_bad_job_at_once(tmp_path):
    done = lcm_run("-m", "zoo=tiny", "sampling.steps=0,1,2", "sampling.height=64,60", "plan=true", cwd=tmp_path)
    assert done.returncode == 2, "bad input"
    assert "4 jobs would fail:" in done.stdout
    assert done.stdout.count("sampling.height=60 must be a positive multiple of 8") == 3
    assert not (tmp_path / "outputs").exists()
