"""Sweeps that race: two sweeps started together get folders of their own; a second sweep into a
folder that a running sweep holds is refused; two processes that come to the same job run it once."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.outputs.locks import LOCK_FILE, FolderLock

SMALL = ["zoo=tiny", "sampling.steps=1", "sampling.height=64", "sampling.width=64"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def start_lcm_run(*args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", **ONE_THREAD)
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen([str(Path(sys.executable).with_name("lcm-run")), *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process, timeout=300):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def records(sweep: Path):
    return {path.parent.name: json.loads(path.read_text()) for path in sweep.glob("*/run.json")}


@pytest.mark.slow
def test_sweeps_started_together_get_their_own_folders_and_a_held_folder_is_refused(tiny_zoo, tmp_path):
    # Same time-stamped folder name for both (a day's stamp): started together, the names collide.
    command = ["-m", *SMALL, "sampling.seed=range(0,4)", "hydra.sweep.dir=sweeps/${now:%Y-%m-%d}"]
    both = [start_lcm_run(*command, cwd=tmp_path) for _ in range(2)]
    day = time.strftime("%Y-%m-%d")
    held = tmp_path / "sweeps" / day
    # A third sweep, into that folder by name while a sweep holds it, is refused at once: it would
    # run every job a second time.
    deadline = time.monotonic() + 120
    while not (held / LOCK_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    refused = subprocess.run([str(Path(sys.executable).with_name("lcm-run")), *command[:-1], f"hydra.sweep.dir={held}"],
                             cwd=tmp_path, env=dict(os.environ, HF_HUB_OFFLINE="1", **ONE_THREAD),
                             capture_output=True, text=True, timeout=300)
    results = [finish(process) for process in both]
    assert [rc for rc, _, _ in results] == [0, 0], [err[-2000:] for _, _, err in results]
    folders = [Path(out.strip().splitlines()[-1].removeprefix("Sweep results in ")) for _, out, _ in results]
    assert sorted(folders) == [held, held.with_name(f"{day}_2")]
    for process, folder in zip(both, folders):
        done = records(folder)
        assert sorted(done) == ["0", "1", "2", "3"] and all(r["status"] == "ok" for r in done.values())
        assert {r["process"]["pid"] for r in done.values()} == {process.pid}
        assert all(r["config"]["paths"]["output_dir"].startswith(str(folder) + os.sep) for r in done.values())
        assert len((folder / "summary.csv").read_text().splitlines()) == 5
        assert not (folder / LOCK_FILE).exists(), "the sweep lets go of its folder when it ends"
    redirected = (held.with_name(f"{day}_2") / "0" / ".hydra" / "hydra.yaml").read_text()
    assert f"- hydra.sweep.dir=sweeps/{day}_2\n" in redirected, "the folder taken is recorded as an override"

    holder = both[folders.index(held)]
    assert refused.returncode == 2, refused.stderr[-2000:]
    message = refused.stderr.strip()
    assert f"hydra.sweep.dir={held} is in use" in message and f"pid {holder.pid} " in message, message
    assert "Traceback" not in message and len(message.splitlines()) == 1


@pytest.mark.slow
def test_two_runs_of_one_job_at_once_render_it_once(tiny_zoo, tmp_path):
    """Two identical single runs into one folder, started together: one renders, the other waits for
    it, then finds the job finished and skips it."""
    folder = tmp_path / "run"
    command = [*SMALL, "sampling.seed=3", f"hydra.run.dir={folder}"]
    both = [start_lcm_run(*command, cwd=tmp_path) for _ in range(2)]
    results = [finish(process) for process in both]
    assert [rc for rc, _, _ in results] == [0, 0], [err[-2000:] for _, _, err in results]
    logs = [out + err for _, out, err in results]
    skipped = [i for i, log in enumerate(logs) if "skipped: this job's results are already complete" in log]
    assert len(skipped) == 1, logs
    renderer = both[1 - skipped[0]]
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "skipped" and record["process"]["pid"] == renderer.pid
    assert [image["file"] for image in record["images"]] == ["image_00_seed3.png"]
    assert sorted(p.name for p in folder.glob("image_*")) == ["image_00_seed3.png"]
    assert not (folder / LOCK_FILE).exists()


def test_a_folder_lock_is_one_process_at_a_time_and_dies_with_its_process(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from runner.outputs.locks import FolderLock; lock = FolderLock(sys.argv[1]); "
        "assert lock.try_acquire(); print('held', flush=True); sys.stdin.readline()"), str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = FolderLock(tmp_path)
        assert not lock.try_acquire() and not lock.held
        assert lock.holder().startswith(f"pid {holder.pid} on ")
    finally:
        holder.kill()  # killed, not released: the kernel lets go of its lock
        holder.wait()
    assert lock.try_acquire() and lock.held
    assert (tmp_path / LOCK_FILE).read_text().startswith(f"pid {os.getpid()} on ")
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists() and not lock.held
