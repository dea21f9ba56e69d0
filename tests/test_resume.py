"""Resume: a job's identity is a hash of its resolved config; finished jobs are skipped without
loading anything, unfinished ones are redone, and another job's results are never touched."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tests.helpers import lcm_run, make_config
from runner.errors import UserError
from runner.run import run
from runner.engine.state import ENGINE

SMALL = ("zoo=tiny", "sampling.height=64", "sampling.width=64")


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_a_finished_job_is_skipped_without_loading_anything(tiny_zoo, tmp_path):
    job = tmp_path / "job"
    first = run(make_config(*SMALL), job)
    image = (job / first["images"][0]["file"]).read_bytes()
    ENGINE.reset()
    again = run(make_config(*SMALL), job)
    assert again["status"] == "skipped" and again["id"] == first["id"]
    assert not ENGINE.pipelines._entries, "a skipped job must load nothing"
    assert json.loads((job / "run.json").read_text())["status"] == "skipped"
    assert (job / first["images"][0]["file"]).read_bytes() == image
    assert run(make_config(*SMALL), job)["status"] == "skipped"  # and stays so


def test_identity_ignores_where_outputs_go_but_not_what_is_drawn():
    from runner.config.schema import job_identity

    base = job_identity(make_config(*SMALL))
    assert job_identity(make_config(*SMALL, "paths.root=elsewhere")) == base
    assert job_identity(make_config(*SMALL, "sampling.seed=1")) != base
    assert job_identity(make_config(*SMALL, "lora.lcm.weight=0.5")) != base


def test_a_half_done_job_is_redone_to_the_same_pixels(tiny_zoo, tmp_path):
    job = tmp_path / "job"
    first = run(make_config(*SMALL, "sampling.num_images=2"), job)
    reference = [pixels(job / i["file"]) for i in first["images"]]
    (job / "run.json").unlink()  # killed after the images, before the record
    (job / first["images"][1]["file"]).unlink()
    (job / ".image_01_seed1.png.abc.tmp").write_bytes(b"half")
    redone = run(make_config(*SMALL, "sampling.num_images=2"), job)
    assert redone["status"] == "ok"
    assert all(np.array_equal(pixels(job / i["file"]), ref) for i, ref in zip(redone["images"], reference))
    assert not list(job.glob(".*.tmp"))


def test_a_job_killed_in_its_first_write_is_redone(tiny_zoo, tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    (job / ".image_00_seed0.png.x1y2.tmp").write_bytes(b"")  # SIGKILL while the first PNG was written
    assert run(make_config(*SMALL), job)["status"] == "ok"
    assert not list(job.glob(".*.tmp"))


def test_a_failed_attempt_is_redone(tiny_zoo, tmp_path):
    job = tmp_path / "job"
    run(make_config(*SMALL), job)
    record = json.loads((job / "run.json").read_text())
    (job / "run.json").write_text(json.dumps({**record, "status": "failed", "error": "OutOfMemoryError"}))
    assert run(make_config(*SMALL), job)["status"] == "ok"


def test_another_jobs_results_are_refused_and_kept(tiny_zoo, tmp_path):
    job = tmp_path / "job"
    run(make_config(*SMALL), job)
    before = {p.name: p.read_bytes() for p in job.iterdir() if p.is_file()}
    (job / "run.json").unlink()  # even with only its images left, they are recognised as another job's
    before.pop("run.json")
    with pytest.raises(UserError, match="another job"):
        run(make_config(*SMALL, "sampling.seed=9"), job)
    assert {p.name: p.read_bytes() for p in job.iterdir() if p.is_file()} == before


def sweep_args(sweep):
    # 4 batches of 3 jobs, the first short and the others long: the kill, after the first batch's
    # files, lands with batches still to run
    return ("-m", *SMALL, "sampling.steps=1,8,12,16", "sampling.seed=0,1,2", f"hydra.sweep.dir={sweep}")


def job_images(sweep):
    return {p.relative_to(sweep).as_posix(): pixels(p) for p in sorted(sweep.glob("*/image_*.png"))}


@pytest.mark.slow
def test_a_killed_sweep_completes_on_rerun_with_the_pixels_of_an_uninterrupted_one(tiny_zoo, tmp_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert lcm_run(*sweep_args(reference), cwd=tmp_path).returncode == 0

    command = [sys.executable, "-c", "from runner.commands.lcm_run import entry; entry()", *sweep_args(resumed)]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 300
    while len(list(resumed.glob("*/run.json"))) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(list(resumed.glob("*/run.json")))
    assert 2 <= finished < 12, "the sweep should have been killed part-way"

    done = lcm_run(*sweep_args(resumed), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    statuses = [json.loads(p.read_text())["status"] for p in sorted(resumed.glob("*/run.json"))]
    assert statuses.count("skipped") >= 2 and set(statuses) <= {"ok", "skipped"} and len(statuses) == 12
    ours, theirs = job_images(resumed), job_images(reference)
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours)
    assert (resumed / "contact_sheet.png").is_file()

    again = lcm_run(*sweep_args(resumed), cwd=tmp_path)
    assert again.returncode == 0
    assert [json.loads(p.read_text())["status"] for p in sorted(resumed.glob("*/run.json"))] == ["skipped"] * 12
    assert "Pipeline on" not in again.stdout + again.stderr, "a finished sweep must load no model"


@pytest.mark.slow
def test_a_sweep_job_refused_for_another_jobs_results_fails_the_sweep(tiny_zoo, tmp_path):
    sweep = tmp_path / "sweep"
    assert lcm_run("-m", *SMALL, "sampling.seed=0,1", f"hydra.sweep.dir={sweep}", cwd=tmp_path).returncode == 0
    (sweep / "1" / "run.json").unlink()  # its images stay: they are seed 1's
    kept = (sweep / "1" / "image_00_seed1.png").read_bytes()
    done = lcm_run("-m", *SMALL, "sampling.seed=0,2", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 1, "a job that could not run is a failed job, run.json or not"
    assert "1 of 2 jobs failed" in done.stderr
    assert (sweep / "1" / "image_00_seed1.png").read_bytes() == kept and not (sweep / "1" / "run.json").exists()
