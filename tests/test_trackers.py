"""Trackers: every job one run in MLflow, TensorBoard or W&B (offline), under every launcher, through
resume and a push afterwards, with a real MLflow tracking server on 127.0.0.1 checked back through
MlflowClient, TensorBoard's own event reader, and W&B's offline run folders."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from tests.helpers import CONF, lcm_run, make_config
from runner.config.schema import job_identity

SMALL = ["-m", "zoo=tiny", "sampling.height=64", "sampling.width=64"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
REPO = Path(__file__).resolve().parent.parent
WARNING = "no more runs are logged in this sweep"
PATIENT = "tracker.timeout=60"  # a loaded test machine may answer slowly: only a stopped server is to count as down


# -- a real MLflow tracking server --------------------------------------------------------------------
class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a SQLite backend and its own artifact folder; stop() and
    start() again keep its store."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self) -> None:
        mlflow = Path(sys.executable).with_name("mlflow")
        command = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                   "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
                   "--artifacts-destination", str(self.folder / "artifacts")]
        log = open(self.folder / "server.log", "ab")
        self.process = subprocess.Popen(command, cwd=self.folder, stdout=log, stderr=log, start_new_session=True)
        from mlflow.tracking import MlflowClient

        deadline = time.monotonic() + 240  # a loaded 2-core machine takes a minute or more
        while True:
            try:
                MlflowClient(self.uri).search_experiments(max_results=1)
                return
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not start: {(self.folder / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # uvicorn's graceful stop can take long: the store is SQLite, safe
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self.process = None


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a server that is down fails fast here too
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()


def sweep_runs(uri: str, experiment: str):
    """(client, the sweep's parent runs, its job runs) in `experiment`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=1000) if found else []
    return (client, [r for r in runs if r.data.tags.get("lcm.kind") == "sweep"],
            [r for r in runs if r.data.tags.get("lcm.kind") == "job"])


def assert_one_run_per_job(uri: str, experiment: str, sweep: Path, tmp_path: Path):
    """One parent holding the report, one child per job folder and none twice, each holding its own
    job's parameters, metrics, images and run.json; a failed job a failed run with its error."""
    client, parents, children = sweep_runs(uri, experiment)
    assert len(parents) == 1, [p.data.tags for p in parents]
    parent = parents[0]
    reported = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "index.html", "contact_sheet.png"} <= reported, reported
    folders = {path.parent.name: json.loads(path.read_text()) for path in sweep.glob("*/run.json")}
    assert sorted(run.data.tags["lcm.job"] for run in children) == sorted(folders), "one run per job, none twice"
    for run in children:
        record = folders[run.data.tags["lcm.job"]]
        tags, run_id = run.data.tags, run.info.run_id
        assert tags["mlflow.parentRunId"] == parent.info.run_id and tags["lcm.sweep"] == str(sweep)
        assert tags["lcm.job_id"] == (record.get("id") or "") and tags["lcm.experiment"] == "none"
        if record["status"] == "failed":
            assert run.info.status == "FAILED" and tags["lcm.error"] == record["error"] and tags["lcm.status"] == "failed"
            continue
        assert run.info.status == "FINISHED" and tags["lcm.status"] in ("ok", "skipped")
        assert run.data.params["sampling.steps"] == str(record["config"]["sampling"]["steps"])
        assert run.data.params["sampling.seed"] == str(record["config"]["sampling"]["seed"])
        assert run.data.params["scheduler._target_"] == record["config"]["scheduler"]["_target_"]
        assert run.data.metrics["time/generate"] == pytest.approx(record["timings"]["generate"])
        images = [a.path for a in client.list_artifacts(run_id, "images")]
        assert images == [f"images/{image['file']}" for image in record["images"]]
        # the run's own run.json and image are its job's: no two jobs in one run
        copy = Path(client.download_artifacts(run_id, "run.json", str(tmp_path)))
        assert json.loads(copy.read_text())["id"] == record["id"]
        picture = Path(client.download_artifacts(run_id, images[0], str(tmp_path)))
        assert picture.read_bytes() == (sweep / tags["lcm.job"] / record["images"][0]["file"]).read_bytes()
    return {run.data.tags["lcm.job"]: run.info.run_id for run in children}


def lcm_grid(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("lcm-grid")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


# -- the config group ------------------------------------------------------------------------------------
def test_a_tracker_is_a_callback_listed_before_the_report_and_none_adds_nothing():
    cfg = make_config("tracker=mlflow", "tracker.uri=http://127.0.0.1:5000", "tracker.experiment=mine")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        hydra_cfg = compose("config", overrides=["tracker=mlflow"], return_hydra_config=True).hydra
        plain = compose("config", return_hydra_config=True).hydra
    # Hydra calls on_multirun_end in reverse order: the tracker's comes after the report's.
    assert list(hydra_cfg.callbacks) == ["tracker", "lcm_runner"]
    assert list(plain.callbacks) == ["lcm_runner"]
    assert (cfg.tracker.kind, cfg.tracker.uri, cfg.tracker.experiment) == ("mlflow", "http://127.0.0.1:5000", "mine")
    assert job_identity(cfg) == job_identity(make_config()), "where a job is logged is not what the job is"


def test_a_bad_tracker_value_is_refused_naming_the_key():
    from runner.config.schema import validate
    from runner.errors import UserError

    with pytest.raises(UserError, match=r"tracker.timeout=0.0 must be more than 0"):
        validate(make_config("tracker=tensorboard", "tracker.timeout=0"))


def test_no_tracker_module_is_imported_unless_a_tracker_is_chosen():
    code = ("import sys, runner.commands.lcm_run, runner.commands.lcm_grid, runner.sweep.callbacks; "
            "print(sorted(m for m in sys.modules if m.startswith(('runner.tracking', 'mlflow', 'wandb', 'tensorboard'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- MLflow ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_mlflow_embedded_default_a_failed_job_a_resume_and_a_push_to_a_server(tiny_zoo, mlflow_server, tmp_path):
    """The embedded SQLite store in the sweep's folder; a failed job is a failed run with its error; the
    same command again (a resume) and `lcm-grid --log mlflow` add no run."""
    sweep = tmp_path / "sweep"
    args = [*SMALL, "sampling.steps=1,0,2", "on_invalid=skip", "tracker=mlflow", PATIENT, f"hydra.sweep.dir={sweep}"]
    done = lcm_run(*args, cwd=tmp_path, env_extra=ONE_THREAD)
    assert done.returncode == 1, done.stderr[-3000:]  # the invalid job failed; the others ran
    assert (sweep / "mlflow.db").is_file() and (sweep / "mlartifacts").is_dir()
    embedded = f"sqlite:///{sweep / 'mlflow.db'}"
    first = assert_one_run_per_job(embedded, "lcm-runner", sweep, tmp_path)
    assert len(first) == 3 and WARNING not in done.stderr

    again = lcm_run(*args, cwd=tmp_path, env_extra=ONE_THREAD)  # resumed: done jobs skipped, nothing logged twice
    assert again.returncode == 1 and "1 ok" not in again.stderr and WARNING not in again.stderr
    assert assert_one_run_per_job(embedded, "lcm-runner", sweep, tmp_path) == first
    assert lcm_grid(str(sweep), "--log", "mlflow", cwd=tmp_path).returncode == 0
    assert assert_one_run_per_job(embedded, "lcm-runner", sweep, tmp_path) == first

    # the same sweep pushed afterwards to a server, twice: once
    for _ in range(2):
        pushed = lcm_grid(str(sweep), "--log", "mlflow", "--uri", mlflow_server.uri, "--experiment", "pushed", cwd=tmp_path)
        assert pushed.returncode == 0, pushed.stderr
        assert f"Logged 3 job(s) of {sweep} to mlflow at {mlflow_server.uri}" in pushed.stdout
    assert len(assert_one_run_per_job(mlflow_server.uri, "pushed", sweep, tmp_path)) == 3


@pytest.mark.slow
@pytest.mark.parametrize("launcher, store", [
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "sampling.steps=1,2", "sampling.seed=0,1"], "server"),
    (["hydra/launcher=local", "sampling.steps=1,2", 'chunk="sampling.seed=0,1"'], "embedded"),
], ids=["joblib-server", "submitit-chunks-embedded"])
def test_mlflow_one_run_per_job_under_other_launchers(tiny_zoo, mlflow_server, tmp_path, launcher, store):
    """joblib workers log their jobs to the server themselves; submitit tasks (each running a chunk's grid
    points into folders of their own) leave a SQLite store to the main process. Either way: one run
    per job folder, each with its own files."""
    sweep = tmp_path / "sweep"
    uri = mlflow_server.uri if store == "server" else f"sqlite:///{sweep / 'mlflow.db'}"
    experiment = f"launcher-{launcher[0].split('=')[1]}"
    tracker = [f"tracker.uri={uri}"] if store == "server" else []
    done = lcm_run(*SMALL, *launcher, "tracker=mlflow", *tracker, PATIENT, f"tracker.experiment={experiment}",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path, env_extra=ONE_THREAD)
    assert done.returncode == 0 and WARNING not in done.stdout + done.stderr, done.stderr[-3000:]
    runs = assert_one_run_per_job(uri, experiment, sweep, tmp_path)
    assert len(runs) == 4
    pids = {json.loads((sweep / job / "run.json").read_text())["process"]["pid"] for job in runs}
    assert len(pids) >= 2, "the jobs ran in the launcher's worker processes"


@pytest.mark.slow
def test_a_server_stopped_mid_sweep_costs_no_image_one_warning_and_a_push_completes_it(tiny_zoo, mlflow_server,
                                                                                          tmp_path):
    sweep = tmp_path / "sweep"
    args = [*SMALL, "sampling.steps=1,2,3,4", "tracker=mlflow", f"tracker.uri={mlflow_server.uri}", PATIENT,
            "tracker.experiment=stopped", f"hydra.sweep.dir={sweep}",
            # stops the server when the second job ends, before the tracker logs it (tests/stop_server.py)
            "+hydra.callbacks.stop_server._target_=tests.stop_server.StopServer", "+hydra.callbacks.stop_server.after=2"]
    env = {**ONE_THREAD, "PYTHONPATH": str(REPO), "LCM_TEST_SERVER_PGID": str(mlflow_server.process.pid)}
    try:
        done = lcm_run(*args, cwd=tmp_path, env_extra=env)
    finally:
        mlflow_server.process.wait(timeout=60)
        mlflow_server.start()  # the other tests' server again, with its store
    assert done.returncode == 0, done.stderr[-3000:]
    assert "server stopped" in done.stderr
    log = done.stdout + done.stderr
    assert log.count(WARNING) == 1, log[-3000:]
    records = {path.parent: json.loads(path.read_text()) for path in sweep.glob("*/run.json")}
    assert len(records) == 4 and all(r["status"] == "ok" and (folder / r["images"][0]["file"]).is_file()
                                     for folder, r in records.items()), "no image lost"
    _, parents, children = sweep_runs(mlflow_server.uri, "stopped")
    assert len(children) == 1 and len(parents) == 1 and parents[0].info.status == "RUNNING"
    logged = children[0].info.run_id

    pushed = lcm_grid(str(sweep), "--log", "mlflow", cwd=tmp_path)  # tracker.uri as the sweep recorded it
    assert pushed.returncode == 0, pushed.stderr
    runs = assert_one_run_per_job(mlflow_server.uri, "stopped", sweep, tmp_path)
    assert len(runs) == 4 and logged in runs.values(), "the job logged before the stop is not logged again"
    assert sweep_runs(mlflow_server.uri, "stopped")[1][0].info.status == "FINISHED"


# -- TensorBoard and W&B ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_tensorboard_runs_read_back_with_tensorboards_reader(tiny_zoo, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sweep = tmp_path / "sweep"
    done = lcm_run(*SMALL, "sampling.steps=1,2", "metrics=[clip_score]", "tracker=tensorboard",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path, env_extra=ONE_THREAD)
    assert done.returncode == 0, done.stderr[-3000:]
    logdir = sweep / "tensorboard"
    assert sorted(p.name for p in logdir.iterdir()) == ["0", "1", "sweep"]
    for job in ("0", "1"):
        record = json.loads((sweep / job / "run.json").read_text())
        image = record["images"][0]
        events = EventAccumulator(str(logdir / job), size_guidance={"images": 0, "scalars": 0})
        events.Reload()
        [picture] = events.Images(f"images/{Path(image['file']).stem}")
        assert picture.encoded_image_string == (sweep / job / image["file"]).read_bytes()
        assert (picture.width, picture.height) == (64, 64)
        assert events.Scalars("time/total")[0].value == pytest.approx(record["timings"]["total"], rel=1e-6)
        assert events.Scalars("clip_score")[0].value == pytest.approx(image["metrics"]["clip_score"], rel=1e-6)
        assert [e.step for e in events.Scalars("clip_score/image")] == [0]
        assert events.Scalars("status/ok")[0].value == 1.0
    sheets = EventAccumulator(str(logdir / "sweep"), size_guidance={"images": 0})
    sheets.Reload()
    assert sheets.Images("contact_sheet")[0].encoded_image_string == (sweep / "contact_sheet.png").read_bytes()

    before = sorted((p.name, p.stat().st_mtime_ns) for p in logdir.glob("[01]/events.*"))
    assert lcm_grid(str(sweep), "--log", "tensorboard", cwd=tmp_path).returncode == 0
    assert sorted((p.name, p.stat().st_mtime_ns) for p in logdir.glob("[01]/events.*")) == before, "logged once"


@pytest.mark.slow
def test_wandb_offline_run_folders_one_per_job(tiny_zoo, tmp_path):
    sweep = tmp_path / "sweep"
    done = lcm_run(*SMALL, "sampling.steps=1,2", "tracker=wandb", "tracker.experiment=offline-test",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path, env_extra={**ONE_THREAD, "WANDB_MODE": "online"})
    assert done.returncode == 0, done.stderr[-3000:]
    from runner.tracking.jobs import sweep_id

    sid = sweep_id(sweep)
    runs = sorted((sweep / "wandb").glob("offline-run-*"))
    assert sorted(p.name.split(f"-{sid}-")[-1] for p in runs) == ["0", "1", "sweep"], [p.name for p in runs]
    for job in ("0", "1"):
        [folder] = (sweep / "wandb").glob(f"offline-run-*-{sid}-{job}")
        record = json.loads((sweep / job / "run.json").read_text())
        assert json.loads((folder / "files" / "run.json").read_text())["id"] == record["id"]
        [logged] = (folder / "files" / "media" / "images").glob("*.png")
        assert Image.open(logged).tobytes() == Image.open(sweep / job / record["images"][0]["file"]).tobytes()
        history = next(folder.glob("run-*.wandb")).read_bytes()  # W&B's binary log: config and metrics in it
        assert b"sampling.steps" in history and b"time/total" in history
    assert lcm_grid(str(sweep), "--log", "wandb", cwd=tmp_path).returncode == 0
    assert [p for p in sorted((sweep / "wandb").glob("offline-run-*")) if not p.name.endswith("-sweep")] == \
        [p for p in runs if not p.name.endswith("-sweep")], "a push logs no job twice"


# -- in process: what is logged, what is skipped, what a failing tracker costs -----------------------------
def write_job(sweep: Path, name: str, status: str, seed: int = 0) -> Path:
    """A job folder as lcm-run leaves it: run.json and, for a finished job, its image."""
    folder = sweep / name
    folder.mkdir(parents=True, exist_ok=True)
    record = {"status": status, "id": f"job{name}", "overrides": [f"sampling.seed={seed}", "scheduler=tcd"],
              "config": {"sampling": {"seed": seed, "steps": 2}, "zoo": {"twins": {"a/b": "/zoo/b"}}},
              "timings": {"total": 0.5}, "images": [], "error": None}
    if status == "ok":
        Image.new("RGB", (16, 8), (seed, 100, 200)).save(folder / "image_00_seed0.png")
        record["images"] = [{"file": "image_00_seed0.png", "seed": seed, "index": 0, "metrics": {"clip_score": 21.5}}]
    else:
        record["error"] = "GenerationFailed: non-finite latents"
    (folder / "run.json").write_text(json.dumps(record))
    return folder


def test_a_job_is_logged_once_a_redone_failure_replaces_its_run_and_a_failing_tracker_warns_once(tmp_path, caplog):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from runner.tracking import open_tracker
    from runner.tracking.jobs import read_job
    from runner.tracking.logbook import DOWN_MARKER, Logbook, push_folder

    sweep = tmp_path / "sweep"
    write_job(sweep, "0", "ok")
    write_job(sweep, "1", "failed", seed=1)
    job = read_job(sweep / "0", sweep, "t2i")
    assert job.params == {"sampling.seed": "0", "sampling.steps": "2", "scheduler": "tcd"}  # the zoo's map left out
    assert job.metrics == {"time/total": 0.5, "clip_score": 21.5} and job.tags["lcm.job_id"] == "job0"
    assert read_job(sweep / "1", sweep, "t2i").tags["lcm.error"] == "GenerationFailed: non-finite latents"

    tracker = open_tracker("tensorboard", None, "lcm-runner", 5.0, sweep)
    assert push_folder(tracker, sweep) == {"ok": 1, "failed": 1}
    first = {job: sorted((sweep / "tensorboard" / job).glob("events.*")) for job in ("0", "1")}
    write_job(sweep, "1", "ok", seed=1)  # resumed: the failed job redone
    push_folder(tracker, sweep)
    assert sorted((sweep / "tensorboard" / "0").glob("events.*")) == first["0"], "a logged job is not logged again"
    [redone] = (sweep / "tensorboard" / "1").glob("events.*")
    events = EventAccumulator(str(redone))
    events.Reload()
    assert events.Scalars("status/ok")[0].value == 1.0, "the failed run is replaced, not added to"

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the log folder should be")
    book = Logbook(open_tracker("tensorboard", str(blocked), "lcm-runner", 5.0, sweep), sweep, None)
    with caplog.at_level("WARNING", logger="lcm-run"):
        assert book.log_folders([sweep / "0", sweep / "1"]) == []
        book.finish_sweep()
    assert len([r for r in caplog.records if "no more runs are logged" in r.message]) == 1
    assert (sweep / DOWN_MARKER).is_file()
    assert Logbook(book.tracker, sweep, None).down(), "the sweep's other processes give up too"
