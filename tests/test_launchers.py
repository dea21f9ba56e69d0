"""Bigger than one machine: the same sweep on Hydra's own launchers (joblib workers, one per GPU;
submitit, locally as on SLURM), grouped into chunks, leaves the same folder, pixels, summary and
contact sheets as in one process; each worker process takes one GPU for its lifetime."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

import runner.sweep.gpu_slots  # noqa: F401  (registers ${gpus:}, which conf/hydra/launcher/ uses)
from tests.helpers import CONF, lcm_run
from runner.sweep import chunks, gpu_slots
from runner.config.schema import job_identity
from runner.errors import UserError

# The README's recipes run these, with the cluster parts (partition, GPU count) left out.
GRID = ["-m", "zoo=tiny", "sampling.steps=1,2", "sampling.seed=0,1", "sampling.height=64", "sampling.width=64"]
CHUNKED = ["-m", "zoo=tiny", "sampling.steps=1,2", 'chunk="sampling.seed=0,1"', "sampling.height=64",
           "sampling.width=64"]
POINTS = {(1, 0), (1, 1), (2, 0), (2, 1)}  # (steps, seed)
# Pixels are equal for equal thread counts: torch's CPU kernels may round differently with another
# count, and loky caps its workers' threads. Every process of these sweeps gets one thread.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}

# -- helpers -----------------------------------------------------------------------------------------
def read_sweep(sweep: Path):
    """{(steps, seed): (job folder, record, pixels)}, checking that every grid point is there once."""
    found = {}
    for run_json in sorted(sweep.glob("*/run.json")):
        record = json.loads(run_json.read_text())
        assert record["status"] in ("ok", "skipped"), (run_json, record.get("error"))
        for image in record["images"]:
            point = (record["call"]["num_inference_steps"], image["seed"])
            assert point not in found, f"{point} rendered twice: {found[point][0]} and {run_json.parent}"
            found[point] = (run_json.parent, record, np.asarray(Image.open(run_json.parent / image["file"])))
    assert set(found) == POINTS
    return found


def assert_same_sweep(done, sweep: Path, reference):
    assert done.returncode == 0, done.stderr[-3000:]
    found = read_sweep(sweep)
    for point, (folder, _, pixels) in found.items():
        assert np.array_equal(pixels, reference[point][2]), f"{point} in {folder} differs from one process"
    # The end-of-sweep callback ran once, in the main process, after every job: its summary has them all.
    assert done.stdout.count(f"Sweep results in {sweep}") == 1
    rows = (sweep / "summary.csv").read_text().splitlines()
    assert len(rows) == 1 + len(POINTS) and all(",ok," in row for row in rows[1:])
    assert (sweep / "contact_sheet.png").is_file() and (sweep / "index.html").is_file()
    return found


def sweep_in_one_process(folder, *extra):
    done = lcm_run(*GRID, *extra, f"hydra.sweep.dir={folder / 'sweep'}", cwd=folder, env_extra=ONE_THREAD)
    assert done.returncode == 0, done.stderr[-3000:]
    return read_sweep(folder / "sweep")


@pytest.fixture(scope="module")
def sequential(tiny_zoo, tmp_path_factory):
    """The reference: the sweep in one process, as lcm-run runs it by default (the sweeper batches
    jobs that differ only in seed into one pipeline call)."""
    return sweep_in_one_process(tmp_path_factory.mktemp("sequential"))


@pytest.fixture(scope="module")
def one_call_per_job(tiny_zoo, tmp_path_factory):
    """The reference for launchers that hand out one job at a time: one process, one call per job."""
    return sweep_in_one_process(tmp_path_factory.mktemp("one-call-per-job"), "hydra.sweeper.batch_size=1")


# -- the same sweep on other launchers ------------------------------------------------------------------
@pytest.mark.slow
def test_joblib_workers_one_per_gpu_give_the_same_sweep_and_load_the_base_once_each(one_call_per_job, tmp_path):
    """hydra/launcher=gpus (joblib, loky): two workers stand in for two GPUs."""
    sweep = tmp_path / "sweep"
    done = lcm_run(*GRID, "hydra/launcher=gpus", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
                   env_extra=ONE_THREAD)
    found = assert_same_sweep(done, sweep, one_call_per_job)
    assert "Joblib.Parallel(n_jobs=2,backend=loky" in done.stdout + done.stderr
    records = [record for _, record, _ in found.values()]
    loads = [record["cache"]["base"] for record in records]
    # The cache lives in runner.engine.state, not beside the task function that joblib pickles: a worker's
    # later jobs find the base it loaded. One load per worker (two at most), never one per job.
    assert 1 <= loads.count("miss") <= 2 and loads.count("hit") == len(loads) - loads.count("miss")
    if all("process" in record for record in records):  # run.json names the process that ran the job
        by_pid = {}
        for record in records:
            by_pid.setdefault(record["process"]["pid"], []).append(record["cache"]["base"])
        assert all(seen.count("miss") == 1 for seen in by_pid.values()), by_pid


@pytest.mark.slow
def test_submitit_local_processes_give_the_same_sweep(one_call_per_job, tmp_path):
    """submitit's local executor: the SLURM code path, one process per job, on this machine."""
    sweep = tmp_path / "sweep"
    done = lcm_run(*GRID, "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
                   env_extra=ONE_THREAD)
    found = assert_same_sweep(done, sweep, one_call_per_job)
    assert sorted(folder.name for folder, _, _ in found.values()) == ["0", "1", "2", "3"]
    assert [record["cache"]["base"] for _, record, _ in found.values()] == ["miss"] * 4, "a process per job"


@pytest.mark.slow
def test_chunks_on_the_slurm_path_give_the_same_sweep_with_one_load_per_task(sequential, tmp_path):
    """The README's SLURM recipe, hydra/launcher=slurm swapped for local: 2 tasks of 2 grid points,
    the two seeds of a task in one pipeline call, as the sweep in one process batches them."""
    sweep = tmp_path / "sweep"
    done = lcm_run(*CHUNKED, "hydra/launcher=local", f"hydra.sweep.dir={sweep}", cwd=tmp_path, env_extra=ONE_THREAD)
    found = assert_same_sweep(done, sweep, sequential)
    assert sorted(folder.name for folder, _, _ in found.values()) == ["0", "0-1", "1", "1-1"]
    for (steps, seed), (folder, record, _) in found.items():
        # one load per task: its first grid point loads, the next finds the base in the process cache
        assert record["cache"]["base"] == ("miss" if seed == 0 else "hit"), (folder, record["cache"])
        assert record["config"]["chunk"] is None and f"sampling.seed={seed}" in record["overrides"]
        assert not any(o.startswith("chunk=") for o in record["overrides"])


# -- chunks, in process -------------------------------------------------------------------------------
def compose_job(*overrides):
    """A job's config and its `hydra` node, as a launcher's worker holds them."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides)), compose("config", overrides=list(overrides),
                                                                        return_hydra_config=True)


def run_chunk(chunk, job_dir, *overrides, batch_size=1):
    cfg, master = compose_job(*overrides)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):  # compose the points as Hydra does
        return chunks.run_chunk(cfg, chunk, job_dir, [*overrides, f'chunk="{chunk}"'], master, batch_size=batch_size)


JOB = ["zoo=tiny", "sampling.height=64", "sampling.width=64", "sampling.steps=1"]


def test_a_chunk_runs_each_grid_point_as_the_job_it_would_be_alone(tiny_zoo, tmp_path):
    from runner.engine.state import ENGINE
    from runner.report import build_report

    ENGINE.reset()
    sweep = tmp_path / "sweep"
    first = run_chunk("sampling.seed=0,1", sweep / "3", *JOB, batch_size=8)
    assert [r["status"] for r in first] == ["ok", "ok"]
    assert [r["cache"]["base"] for r in first] == ["miss", "hit"]
    assert first[1]["batch"]["leader"] == first[0]["id"], "points that differ only in seed share one call"
    for seed, record, folder in zip((0, 1), first, ("3", "3-1")):
        alone, _ = compose_job(*JOB, f"sampling.seed={seed}")
        assert record["id"] == job_identity(alone), "a grid point is the job it would be without chunk"
        assert record["overrides"] == [*JOB, f"sampling.seed={seed}"]
        assert json.loads((sweep / folder / "run.json").read_text())["images"][0]["seed"] == seed
    report = build_report(sweep)
    rows = report["summary"].read_text().splitlines()
    assert len(rows) == 3 and {row.split(",")[0] for row in rows[1:]} == {"3", "3-1"}
    again = run_chunk("sampling.seed=0,1", sweep / "3", *JOB)  # rerunning resumes: nothing left to do
    assert [r["status"] for r in again] == ["skipped", "skipped"]


def test_a_batch_on_the_cpu_decodes_each_jobs_images_as_the_job_alone_would(tiny_zoo, tmp_path, monkeypatch,
                                                                             fresh_cache):
    """One UNet call for the group, then one VAE decode per job, of its own images (runner.engine.generation)."""
    from diffusers import AutoencoderKL

    decoded = []
    decode = AutoencoderKL.decode

    def counting(self, z, *args, **kwargs):
        decoded.append(z.shape[0])
        return decode(self, z, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "decode", counting)
    records = run_chunk("sampling.seed=0,5", tmp_path / "sweep" / "0", *JOB, "sampling.num_images=2", batch_size=8)
    assert [r["status"] for r in records] == ["ok", "ok"]
    batch = dict(records[1]["batch"])
    assert [member["seed"] for member in batch.pop("members")] == [0, 5]
    assert batch == {"leader": records[0]["id"], "jobs": 2, "images": 4, "decoded": "per job"}
    assert decoded == [2, 2], "a decode per job, of its two images"
    assert [[image["seed"] for image in r["images"]] for r in records] == [[0, 1], [5, 6]]


def test_an_invalid_grid_point_is_recorded_and_the_others_still_run(tiny_zoo, tmp_path):
    sweep = tmp_path / "sweep"
    with pytest.raises(UserError, match="1 of 2 grid points"):
        run_chunk("sampling.guidance_scale=-1,0", sweep / "0", *JOB)
    bad = json.loads((sweep / "0" / "run.json").read_text())
    assert bad["status"] == "failed" and "sampling.guidance_scale=-1" in bad["error"]
    assert "sampling.guidance_scale=-1" in bad["overrides"] and not list((sweep / "0").glob("*.png"))
    good = json.loads((sweep / "0-1" / "run.json").read_text())
    assert good["status"] == "ok" and (sweep / "0-1" / good["images"][0]["file"]).is_file()


def test_grid_points_expand_like_hydras_basic_sweeper():
    job = ["zoo=tiny", 'chunk="sampling.seed=range(0,2) lora.lcm.weight=0.5,1"']
    assert chunks.grid_points(job) == [
        ["zoo=tiny", "sampling.seed=0", "lora.lcm.weight=0.5"], ["zoo=tiny", "sampling.seed=0", "lora.lcm.weight=1"],
        ["zoo=tiny", "sampling.seed=1", "lora.lcm.weight=0.5"], ["zoo=tiny", "sampling.seed=1", "lora.lcm.weight=1"]]
    assert chunks.expand_jobs([["zoo=tiny"], job]) == [["zoo=tiny"], *chunks.grid_points(job)]
    assert chunks.point_folder(Path("/s/7"), 0) == Path("/s/7") and chunks.point_folder(Path("/s/7"), 2) == Path("/s/7-2")


@pytest.mark.parametrize("job,expected", [
    (["sampling.seed=1", 'chunk="sampling.seed=0,1"'], "sampling.seed is set both"),
    (['chunk="hydra.run.dir=x"'], "sets hydra.run.dir"),
    (['chunk="chunk=x"'], "sets chunk"),
    (['chunk="sampling.seed=[0"'], "is not a list of overrides"),
    (["chunk=\"sampling.seed='0\""], "is not a list of overrides"),
])
def test_a_bad_chunk_is_one_clear_error(job, expected):
    with pytest.raises(UserError, match=expected):
        chunks.grid_points(job)


# -- one GPU per process -------------------------------------------------------------------------------
CLAIMER = """
import sys
from runner.sweep import gpu_slots
count = int(sys.argv[1])
print(gpu_slots.claim(count), flush=True)
sys.stdin.readline()  # hold the slot until told to go on
print(gpu_slots.claim(count), flush=True)
"""


def start_claimer(count, env):
    process = subprocess.Popen([sys.executable, "-c", CLAIMER, str(count)], env=env, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    return process, int(process.stdout.readline())


def finish_claimer(process):
    out, _ = process.communicate("go\n", timeout=60)
    return int(out.split()[0])


def test_worker_processes_take_different_gpus_and_each_keeps_its_own(tmp_path):
    env = dict(os.environ, **{gpu_slots.ENV_VAR: str(tmp_path / "locks")})
    env.pop("CUDA_VISIBLE_DEVICES", None)
    first, slot_a = start_claimer(2, env)
    second, slot_b = start_claimer(2, env)
    third, slot_c = start_claimer(2, env)  # more workers than GPUs: shares one, by pid
    assert (slot_a, slot_b) == (0, 1) and slot_c == third.pid % 2
    assert [finish_claimer(p) for p in (first, second, third)] == [slot_a, slot_b, slot_c], "kept for life"
    fourth, slot_d = start_claimer(2, env)  # the first three have exited: their GPUs are free again
    assert slot_d == 0
    finish_claimer(fourth)


@pytest.fixture
def slot_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(gpu_slots.ENV_VAR, str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpu_slots.release()
    yield tmp_path / "locks"
    gpu_slots.release()


@pytest.mark.slow
def test_device_auto_with_several_gpus_is_one_gpu_for_the_process_lifetime(slot_folder):
    from runner.engine.models import resolve_device

    blocker = subprocess.Popen([sys.executable, "-c", CLAIMER, "3"], env=dict(os.environ), text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert int(blocker.stdout.readline()) == 0  # another worker holds GPU 0
    try:
        assert resolve_device("auto", gpu_count=3) == "cuda:1"
        assert resolve_device("auto", gpu_count=3) == "cuda:1" and gpu_slots.held_slot() == 1
        assert (slot_folder / "gpu-1.lock").read_text().strip() == str(os.getpid())
    finally:
        finish_claimer(blocker)
    assert resolve_device("auto", gpu_count=3) == "cuda:1", "GPU 0 freed: this process still keeps its GPU"
    assert resolve_device("auto", gpu_count=1) == "cuda"
    assert resolve_device("cpu", gpu_count=3) == "cpu"
    if not __import__("torch").backends.mps.is_available():
        assert resolve_device("auto", gpu_count=0) == "cpu"


def test_gpu_lock_files_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpu_slots.device_names(2) == ["2", "3"]
    assert gpu_slots.device_names(3) == ["0", "1", "2"]  # not the list torch sees: by index
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1a/x,GPU-2b")
    assert gpu_slots.device_names(2) == ["GPU-1a_x", "GPU-2b"]


# -- the launcher configs -------------------------------------------------------------------------------
def launcher(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


def test_gpus_launcher_is_joblib_with_one_persistent_worker_per_gpu():
    gpus = launcher("hydra/launcher=gpus")
    assert gpus["_target_"].endswith("JoblibLauncher") and gpus["backend"] == "loky"
    assert gpus["n_jobs"] == max(1, gpu_slots.cuda_gpu_count()) and str(gpus["batch_size"]) == "1"
    assert launcher("hydra/launcher=gpus", "hydra.launcher.n_jobs=4")["n_jobs"] == 4
    local = launcher("hydra/launcher=local")
    assert local["_target_"].endswith("LocalLauncher") and local["gpus_per_node"] == gpu_slots.cuda_gpu_count()


def test_slurm_launcher_asks_for_one_gpu_per_array_task(tmp_path, monkeypatch):
    """The sbatch script submitit would submit for hydra/launcher=slurm (no cluster needed: a stand-in
    `srun` on PATH), built from the config as Hydra's submitit plugin builds it."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    params = launcher("hydra/launcher=slurm", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path / 's'}")
    assert params.pop("_target_").endswith("SlurmLauncher")
    executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{key if key in base else f"slurm_{key}": value for key, value in params.items()})
    executor._executor.parameters["map_count"] = 16  # what map_array sets for a 16-job sweep
    script = executor._executor._make_submission_file_text("python -m submitit", "uid")
    for line in ("--array=0-15%8", "--gpus-per-node=1", "--ntasks-per-node=1", "--partition=gpu", "--time=60",
                 "--mem=48GB", "--cpus-per-task=8"):
        assert f"#SBATCH {line}\n" in script, script
