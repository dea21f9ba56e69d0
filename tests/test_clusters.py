"""The README's scale-out recipes on real schedulers started on this machine (tests/clusters.py): a
single-node SLURM cluster and a local Ray head node. The same sweep as in one process: every grid
point exactly once, the same pixels, one model load per task or worker, a complete summary; a sweep
cancelled with scancel is completed by running the same command again."""
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import lcm_run
from tests.test_launchers import ONE_THREAD, assert_same_sweep, read_sweep, sweep_in_one_process

README = Path(__file__).resolve().parents[1] / "README.md"
# On this machine: no GPU, 2 cores; the rest of the command is the README's.
CPU_TASKS = ["hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]


def readme_command(launcher: str):
    """The README's `lcm-run -m hydra/launcher=<launcher> ...` recipe, as arguments."""
    lines = [line for line in README.read_text().splitlines() if line.startswith(f"lcm-run -m hydra/launcher={launcher} ")]
    assert len(lines) == 1, f"README.md should show one hydra/launcher={launcher} recipe"
    return shlex.split(lines[0])[1:]


def slurm_recipe(cluster, sweep: Path, *extra):
    args = [re.sub(r"^hydra\.launcher\.partition=.*", f"hydra.launcher.partition={cluster.partition}", a)
            for a in readme_command("slurm")]
    assert f"hydra.launcher.partition={cluster.partition}" in args
    return [*args, *CPU_TASKS, *extra, f"hydra.sweep.dir={sweep}"]


@pytest.fixture(scope="module")
def sequential(tiny_zoo, tmp_path_factory):
    """The reference: the same grid in one process (seeds batched as the chunks batch them)."""
    return sweep_in_one_process(tmp_path_factory.mktemp("sequential"))


def assert_one_load_per_task(found):
    """Each chunk ran in one SLURM array task: its first grid point loaded the model, the second found it."""
    tasks = {}
    for (steps, seed), (folder, record, _) in found.items():
        assert record["cache"]["base"] == ("miss" if seed == 0 else "hit"), (folder, record["cache"])
        tasks.setdefault(record["process"]["slurm_job"], set()).add(record["process"]["pid"])
    assert len(tasks) == 2 and all(len(pids) == 1 for pids in tasks.values()), tasks
    return sorted(tasks)


@pytest.mark.slow
def test_the_readme_slurm_recipe_on_a_real_cluster(slurm_cluster, sequential, tmp_path):
    sweep = tmp_path / "sweep"
    done = lcm_run(*slurm_recipe(slurm_cluster, sweep), cwd=tmp_path, env_extra={**ONE_THREAD, **slurm_cluster.env})
    found = assert_same_sweep(done, sweep, sequential)
    assert sorted(folder.name for folder, _, _ in found.values()) == ["0", "0-1", "1", "1-1"]
    tasks = assert_one_load_per_task(found)
    array = tasks[0].split("_")[0]
    assert tasks == [f"{array}_0", f"{array}_1"]
    # submitit returns once each task's result is written; the task's process ends a moment later
    deadline = time.monotonic() + 60
    while any("|COMPLETED" not in line for line in slurm_cluster.queue(array)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert sorted(slurm_cluster.queue(array)) == [f"{array}_0|COMPLETED", f"{array}_1|COMPLETED"]
    output = done.stdout + done.stderr
    # No accounting here: one line says so, instead of a warning from submitit at every poll.
    assert "Bypassing sacct error" not in output and output.count("sacct is unavailable") == 1, output[-3000:]


@pytest.mark.slow
def test_a_sweep_cancelled_with_scancel_is_completed_by_running_it_again(slurm_cluster, sequential, tmp_path):
    sweep = tmp_path / "sweep"
    command = slurm_recipe(slurm_cluster, sweep, "hydra.launcher.array_parallelism=1")  # one task at a time
    env = {**ONE_THREAD, **slurm_cluster.env}
    first = subprocess.Popen([str(Path(sys.executable).with_name("lcm-run")), *command], cwd=tmp_path, text=True,
                             env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first_task = [sweep / "0" / "run.json", sweep / "0-1" / "run.json"]
    deadline = time.monotonic() + 300
    while not all(path.is_file() for path in first_task) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(json.loads(path.read_text())["status"] == "ok" for path in first_task), first.communicate()
    array = json.loads(first_task[0].read_text())["process"]["slurm_job"].split("_")[0]
    slurm_cluster.run("scancel", array)
    out, err = first.communicate(timeout=300)  # the main process sees the cancelled task, and stops
    assert first.returncode == 1, (out + err)[-3000:]
    message = err.strip().splitlines()[-1]
    assert message.startswith(f"Error: SLURM task {array}_1 ended without finishing its job (CANCELLED)"), err[-3000:]
    assert "run the same command again to resume" in message
    unfinished = [p for p in ("1", "1-1") if not (sweep / p / "run.json").is_file()
                  or json.loads((sweep / p / "run.json").read_text())["status"] != "ok"]
    assert unfinished, "the second task was cancelled before it finished"

    again = lcm_run(*command, cwd=tmp_path, env_extra=env)
    assert again.returncode == 0, again.stderr[-3000:]
    found = read_sweep(sweep)
    for point, (folder, _, pixels) in found.items():
        assert np.array_equal(pixels, sequential[point][2]), f"{point} in {folder} differs from one process"
    statuses = {folder.name: record["status"] for folder, record, _ in found.values()}
    assert statuses == {"0": "skipped", "0-1": "skipped", "1": "ok", "1-1": "ok"}
    rows = [row.split(",") for row in (sweep / "summary.csv").read_text().splitlines()]
    status = rows[0].index("status")
    assert sorted((row[0], row[status]) for row in rows[1:]) == sorted(statuses.items()), "the summary has them all"
    assert_one_load_per_task(found)


@pytest.mark.slow
def test_the_readme_ray_recipe_on_a_local_head_node(ray_head, sequential, tiny_zoo, tmp_path):
    """Workers of a head started apart: the zoo's folder and offline mode reach them through runtime_env."""
    sweep = tmp_path / "sweep"
    args = [re.sub(r"^hydra\.launcher\.ray\.init\.address=.*", f"hydra.launcher.ray.init.address={ray_head.address}", a)
            for a in readme_command("ray_cluster")]
    args = [a for a in args if not a.startswith("hydra.sweep.dir=")] + [f"hydra.sweep.dir={sweep}"]
    assert f"hydra.launcher.ray.init.address={ray_head.address}" in args
    done = lcm_run(*args, cwd=tmp_path, env_extra=ONE_THREAD)
    found = assert_same_sweep(done, sweep, sequential)
    assert sorted(folder.name for folder, _, _ in found.values()) == ["0", "0-1", "1", "1-1"]
    by_pid = {}
    for (steps, seed), (folder, record, _) in found.items():
        assert record["components"]["base"].startswith(str(tiny_zoo)), "the worker found the session's zoo"
        by_pid.setdefault(record["process"]["pid"], []).append((steps, seed, record["cache"]["base"]))
    for pid, points in by_pid.items():  # a worker loads once; a chunk runs in one worker
        assert [cache for _, _, cache in points].count("miss") == 1, by_pid
        assert len({steps for steps, _, _ in points}) * 2 == len(points), by_pid
