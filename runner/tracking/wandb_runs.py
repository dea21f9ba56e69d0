"""Weights & Biases, offline only: each job an offline run (config, timings and scores, images,
run.json) in `<folder>/wandb/offline-run-*`, grouped by sweep, the sweep a run of its own with the
report files; `wandb sync` uploads them when you choose.

Runs are started and finished explicitly, one per job, with an id made of the sweep's and the job's
keys: a job already logged, as it is now, is not logged again; one logged as failed and since redone
replaces its earlier run. Logged from the sweep's main process only (wandb starts a service per process).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

from runner.tracking import jobs as tracked
from runner.tracking import missing_library

NOTE = "lcm-job.json"  # in the offline run's folder: what was logged (wandb keeps it in its binary log)


class WandbTracker:
    kind = "wandb"
    concurrent = False

    def __init__(self, uri: Optional[str], experiment: str, timeout: float, out_dir: Path) -> None:
        self.root = Path(uri) if uri else Path(out_dir)
        self.project = experiment
        os.environ["WANDB_MODE"] = "offline"  # never the network, whatever the user's wandb settings say
        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            import wandb
        except ImportError:
            raise missing_library("wandb") from None
        self.wandb = wandb

    def describe(self) -> str:
        return f"wandb (offline) in {self.root / 'wandb'}"

    def _runs(self, run_id: str) -> List[Path]:
        return sorted((self.root / "wandb").glob(f"offline-run-*-{run_id}"))

    def _start(self, run_id: str, **kwargs: Any) -> Any:
        for folder in self._runs(run_id):  # an earlier attempt: replaced, never doubled
            shutil.rmtree(folder)
        self.root.mkdir(parents=True, exist_ok=True)
        settings = self.wandb.Settings(console="off", silent=True)
        return self.wandb.init(mode="offline", dir=str(self.root), project=self.project, id=run_id,
                               settings=settings, reinit="create_new", **kwargs)

    def start_sweep(self, out_dir: Path, experiment: Optional[str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def log_job(self, job: tracked.TrackedJob) -> bool:
        run_id = f"{job.tags['lcm.sweep_id']}-{job.name}"
        outcome = {"lcm.job_id": job.identity or "", "lcm.status": "ok" if job.succeeded else job.status,
                   "lcm.error": job.error or ""}
        if any(_note(folder) == outcome for folder in self._runs(run_id)):
            return False
        run = self._start(run_id, name=job.title[:128], group=Path(job.tags["lcm.sweep"]).name, job_type="job",
                          config=job.params, tags=[job.tags["lcm.experiment"], outcome["lcm.status"]])
        try:
            run.summary.update({**{k: v for k, v in job.tags.items() if k.startswith("lcm.")}, **outcome})
            first = {**job.metrics, "images": [self.wandb.Image(str(path), caption=path.name) for path in job.images]}
            run.log(first, step=0)
            for index, scores in enumerate(job.image_metrics):
                if scores:
                    run.log({f"{name}/image": value for name, value in scores.items()}, step=index)
            if job.record_file is not None:
                run.save(str(job.record_file), base_path=str(job.folder), policy="now")
        finally:
            run.finish(exit_code=0 if job.succeeded else 1)
        (Path(run.dir).parent / NOTE).write_text(json.dumps(outcome), encoding="utf-8")  # run.dir: its files/
        return True

    def finish_sweep(self, out_dir: Path, files: List[Path], statuses: Dict[str, int]) -> None:
        sid = tracked.sweep_id(out_dir)
        run = self._start(f"{sid}-sweep", name=out_dir.name, group=out_dir.name, job_type="sweep")
        try:
            sheets = [self.wandb.Image(str(path), caption=path.name) for path in files if path.suffix == ".png"]
            run.log({"contact_sheets": sheets, **{f"jobs/{status}": n for status, n in statuses.items()}}, step=0)
            for path in files:
                run.save(str(path), base_path=str(out_dir), policy="now")
        finally:
            run.finish()

    def close(self) -> None:
        pass


def _note(folder: Path) -> Any:
    try:
        return json.loads((folder / NOTE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
