"""MLflow: each job a run (its config as parameters, timings and scores as metrics, images and run.json
as artifacts), children of one run for the sweep that holds the report files.

Talks through MlflowClient with explicit run ids, never MLflow's process-wide active run: a launcher
worker that takes job after job cannot mix two jobs into one run. Requests get short timeouts and no
retries (MLflow's defaults, 120 s and 7 retries, would stall a sweep whose server is down); set
MLFLOW_HTTP_REQUEST_TIMEOUT or MLFLOW_HTTP_REQUEST_MAX_RETRIES to choose otherwise.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from runner.tracking import jobs as tracked
from runner.tracking import concurrent, missing_library

DB_NAME = "mlflow.db"
ARTIFACTS = "mlartifacts"  # beside a SQLite store: MLflow's own default is ./mlruns in the working folder
TERMINAL = ("FINISHED", "FAILED", "KILLED")
BATCH = 100  # MLflow takes at most 100 parameters (1000 metrics) in one log_batch


def default_uri(out_dir: Path) -> str:
    return f"sqlite:///{Path(out_dir).resolve() / DB_NAME}"


class MlflowTracker:
    kind = "mlflow"

    def __init__(self, uri: Optional[str], experiment: str, timeout: float, out_dir: Path) -> None:
        self.uri = uri or default_uri(out_dir)
        self.experiment = experiment
        self.concurrent = concurrent(self.kind, self.uri)  # else only the sweep's main process logs
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, round(timeout))))
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise missing_library("mlflow") from None
        self.client = MlflowClient(tracking_uri=self.uri)
        self._experiment_id: Optional[str] = None
        self.parent: Optional[str] = None  # the sweep's run

    def describe(self) -> str:
        return f"mlflow at {self.uri}"

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is not None:
                self._experiment_id = found.experiment_id
            else:
                self._experiment_id = self.client.create_experiment(self.experiment, artifact_location=self._artifacts())
        return self._experiment_id

    def _artifacts(self) -> Optional[str]:
        if self.uri.startswith("sqlite:///"):
            return (Path(self.uri[len("sqlite:///"):]).resolve().parent / ARTIFACTS).as_uri()
        return None  # a server's own artifact store

    def _search(self, **tags: str) -> List[Any]:
        where = " AND ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
        return self.client.search_runs([self.experiment_id], filter_string=where, max_results=50000)

    # -- the sweep ------------------------------------------------------------------------------
    def start_sweep(self, out_dir: Path, experiment: Optional[str]) -> None:
        sid = tracked.sweep_id(out_dir)
        found = self._search(**{"lcm.kind": "sweep", "lcm.sweep_id": sid})
        if found:  # a resumed sweep: the same parent
            self.parent = found[0].info.run_id
            if found[0].info.status != "RUNNING":
                self.client.update_run(self.parent, status="RUNNING")
            return
        tags = {"lcm.kind": "sweep", "lcm.sweep": str(out_dir), "lcm.sweep_id": sid, "lcm.experiment": experiment or "none"}
        self.parent = self.client.create_run(self.experiment_id, run_name=out_dir.name, tags=tags).info.run_id

    def finish_sweep(self, out_dir: Path, files: List[Path], statuses: Dict[str, int]) -> None:
        if self.parent is None:
            self.start_sweep(out_dir, None)
        # Runs that launcher workers logged before the parent existed become its children now.
        for run in self._search(**{"lcm.kind": "job", "lcm.sweep_id": tracked.sweep_id(out_dir)}):
            if run.data.tags.get("mlflow.parentRunId") != self.parent:
                self.client.set_tag(run.info.run_id, "mlflow.parentRunId", self.parent)
        for path in files:
            self.client.log_artifact(self.parent, str(path))
        now = _now()
        from mlflow.entities import Metric

        counts = [Metric(f"jobs/{status}", float(n), now, 0) for status, n in statuses.items()]
        self.client.log_batch(self.parent, metrics=counts)
        failed = any(status not in tracked.DONE for status in statuses)
        self.client.set_terminated(self.parent, status="FAILED" if failed else "FINISHED")

    # -- a job ----------------------------------------------------------------------------------
    def log_job(self, job: tracked.TrackedJob) -> bool:
        """Log `job` as a run; False when this job, as it is now, is already logged."""
        from mlflow.entities import Metric, Param

        if self.parent is None and job.folder.parent == Path(job.tags["lcm.sweep"]):
            found = self._search(**{"lcm.kind": "sweep", "lcm.sweep_id": job.tags["lcm.sweep_id"]})
            self.parent = found[0].info.run_id if found else None
        earlier = self._search(**{"lcm.sweep_id": job.tags["lcm.sweep_id"], "lcm.job": job.name})
        if any(_same(run, job) for run in earlier):
            return False
        for run in earlier:  # failed, unfinished or another attempt of this folder: replaced, never doubled
            self.client.delete_run(run.info.run_id)
        tags = dict(job.tags)
        if self.parent is not None:
            tags["mlflow.parentRunId"] = self.parent
        run_id = self.client.create_run(self.experiment_id, run_name=job.title[:250], tags=tags).info.run_id
        now = _now()
        params = [Param(key, value) for key, value in job.params.items()]
        metrics = [Metric(key, value, now, 0) for key, value in job.metrics.items()]
        metrics += [Metric(f"{name}/image", float(value), now, index)
                    for index, scores in enumerate(job.image_metrics) for name, value in scores.items()]
        for start in range(0, len(params), BATCH):
            self.client.log_batch(run_id, params=params[start:start + BATCH])
        for start in range(0, len(metrics), 10 * BATCH):
            self.client.log_batch(run_id, metrics=metrics[start:start + 10 * BATCH])
        for image in job.images:
            self.client.log_artifact(run_id, str(image), "images")
        if job.record_file is not None:
            self.client.log_artifact(run_id, str(job.record_file))
        self.client.set_terminated(run_id, status="FINISHED" if job.succeeded else "FAILED")
        return True

    def close(self) -> None:
        pass


def _same(run: Any, job: tracked.TrackedJob) -> bool:
    """Whether an earlier run is this job as it is now: the same identity and outcome, complete."""
    tags = run.data.tags
    if run.info.status not in TERMINAL or tags.get("lcm.job_id", "") != (job.identity or ""):
        return False
    if job.succeeded:
        return tags.get("lcm.status") in tracked.DONE
    return tags.get("lcm.status") == job.status and tags.get("lcm.error") == job.tags.get("lcm.error")


def _now() -> int:
    return int(time.time() * 1000)
