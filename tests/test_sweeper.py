"""lcm-runner's sweeper against Hydra's basic one: the same jobs, folders, `.hydra/` files and
pixels, composed once per config-group choice and run in switching-cost order."""
import re

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.helpers import lcm_run

GRID = ["-m", "zoo=tiny", "sampling.height=64", "sampling.width=64", "lora=lcm,none,lcm_papercut",
        "sampling.steps=1,2", "fuse_lora=false"]


def hydra_files(job):
    files = {name: yaml.safe_load((job / ".hydra" / name).read_text()) for name in
             ("config.yaml", "overrides.yaml", "hydra.yaml")}
    hydra = files["hydra.yaml"]["hydra"]
    for volatile in ("runtime", "sweep", "sweeper", "run"):  # where it ran, and which sweeper ran it
        hydra.pop(volatile)
    hydra["overrides"].pop("hydra")  # hydra.sweep.dir=... and hydra/sweeper=basic
    return files


def same_sweep_three_ways(grid, tmp_path, jobs):
    """The sweep run by lcm-run's sweeper, by Hydra's basic one, and by ours with Hydra's run_job:
    the same job folders, `.hydra/` files and pixels. Returns our run and the basic one's."""
    ours, basic = tmp_path / "ours", tmp_path / "basic"
    done = lcm_run(*grid, f"hydra.sweep.dir={ours}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    stock = lcm_run(*grid, f"hydra.sweep.dir={basic}", "hydra/sweeper=basic", cwd=tmp_path)
    assert stock.returncode == 0, stock.stderr
    hydras = tmp_path / "ours-with-hydras-run-job"
    assert lcm_run(*grid, f"hydra.sweep.dir={hydras}", "hydra.sweeper.launch=hydra", cwd=tmp_path).returncode == 0
    folders = sorted(p.name for p in basic.iterdir() if p.is_dir())
    assert sorted(p.name for p in ours.iterdir() if p.is_dir()) == folders == [str(i) for i in range(jobs)]
    for job in folders:
        assert hydra_files(ours / job) == hydra_files(basic / job) == hydra_files(hydras / job), job
        for image in (basic / job).glob("image_*.png"):
            assert np.array_equal(np.asarray(Image.open(image)), np.asarray(Image.open(ours / job / image.name)))
    return done, stock


@pytest.mark.slow
def test_same_jobs_files_and_pixels_as_hydras_basic_sweeper(tiny_zoo, tmp_path):
    done, stock = same_sweep_three_ways(GRID, tmp_path, jobs=6)
    ours = tmp_path / "ours"  # the order the jobs ran in: each run.json is written as its job ends
    launched = sorted(range(6), key=lambda n: (ours / str(n) / "run.json").stat().st_mtime_ns)
    stacks = {0: "lcm", 1: "lcm", 2: "none", 3: "none", 4: "lcm_papercut", 5: "lcm_papercut"}
    switches = sum(stacks[a] != stacks[b] for a, b in zip(launched, launched[1:]))
    assert sorted(launched) == list(range(6)) and switches == 2, "each LoRA stack once, then the next"
    grid = [int(n) for n in re.findall(r"#(\d+) :", stock.stdout + stock.stderr)]
    assert grid == list(range(6))


@pytest.mark.slow
def test_a_sweep_over_values_alone_gives_the_same_as_hydras_basic_sweeper(tiny_zoo, tmp_path):
    """Its jobs start from the master config instead of a composition (runner.sweep.expansion)."""
    same_sweep_three_ways(["-m", "zoo=tiny", "sampling.height=64", "sampling.width=64", "sampling.steps=1,2",
                           "sampling.guidance_scale=0,1.5", "sampling={seed: 3}"], tmp_path, jobs=4)


@pytest.mark.slow
def test_grid_order_can_be_kept(tmp_path):
    done = lcm_run(*GRID, "hydra.sweeper.order=grid", "plan=true", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Plan: 6 jobs" in done.stdout


@pytest.mark.slow
def test_a_dry_run_counts_model_loads_in_the_order_the_sweep_runs(tmp_path):
    """Cost order runs the inpainting model's job apart from the base model's two; the grid's order
    (t2i, inpaint, lora_papercut) loads the base twice."""
    sweep = ["-m", "zoo=tiny", "experiment=t2i,inpaint,lora_papercut", "plan=true"]
    loads = {}
    for order in ("cost", "grid"):
        done = lcm_run(*sweep, f"hydra.sweeper.order={order}", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        loads[order] = re.findall(r"base \S+ \(\S+/(sdxl-\w+)\): loaded (\d)x", done.stdout)
    assert sorted(loads["cost"]) == [("sdxl-base", "1"), ("sdxl-inpaint", "1")]
    assert sorted(loads["grid"]) == [("sdxl-base", "2"), ("sdxl-inpaint", "1")]


@pytest.mark.slow
def test_jobs_differing_only_in_seed_or_prompt_share_one_call(tiny_zoo, tmp_path):
    import json

    grid = ["-m", "zoo=tiny", "sampling.height=64", "sampling.width=64", "sampling.seed=0,1,2",
            "sampling.prompt=a fox,a red car", "sampling.steps=2"]
    batched, alone = tmp_path / "batched", tmp_path / "alone"
    assert lcm_run(*grid, f"hydra.sweep.dir={batched}", "hydra.sweeper.batch_size=4", cwd=tmp_path).returncode == 0
    assert lcm_run(*grid, f"hydra.sweep.dir={alone}", "hydra.sweeper.batch_size=1", cwd=tmp_path).returncode == 0
    records = {int(p.parent.name): json.loads(p.read_text()) for p in batched.glob("*/run.json")}
    assert len(records) == 6 and all(r["status"] == "ok" for r in records.values())
    calls = {}
    for record in records.values():
        calls.setdefault(record["batch"]["leader"], []).append(record["batch"]["images"])
    assert sorted(len(v) for v in calls.values()) == [2, 4], "6 one-image jobs, at most 4 images a call"
    for job, record in records.items():
        assert "batch" not in json.loads((alone / str(job) / "run.json").read_text())
        for image in record["images"]:
            ours = np.asarray(Image.open(batched / str(job) / image["file"]), dtype=np.int16)
            theirs = np.asarray(Image.open(alone / str(job) / image["file"]), dtype=np.int16)
            assert np.abs(ours - theirs).max() <= 1, "batching may only change float rounding"


def test_a_sweep_plans_each_job_once_and_leaves_its_handoff_empty(tiny_zoo, tmp_path, monkeypatch):
    """The up-front check plans every job; the jobs it launches in this process take those plans
    (runner.sweep.handoff), and nothing of the sweep stays behind for the next one."""
    from benchmarks.bench import run_hydra
    from runner.commands import lcm_run
    from runner.sweep import expansion, handoff

    planned = {"check": 0, "job": 0}

    def counting(where, plan_job):
        return lambda cfg: planned.__setitem__(where, planned[where] + 1) or plan_job(cfg)

    monkeypatch.setattr(expansion, "plan_job", counting("check", expansion.plan_job))
    monkeypatch.setattr(handoff, "plan_job", counting("job", handoff.plan_job))
    run_hydra(lcm_run.run_app, ["zoo=tiny", "sampling.height=64", "sampling.width=64", "sampling.steps=1",
                                "sampling.seed=0,1", "sampling.guidance_scale=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert planned == {"check": 4, "job": 0}
    assert vars(handoff.HANDOFF) == {"composed": {}, "plans": {}, "batches": {}, "ready": {}}
    assert len(list((tmp_path / "sweep").glob("*/image_00_seed*.png"))) == 4
