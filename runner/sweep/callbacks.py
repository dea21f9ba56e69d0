"""Hydra callbacks: check a run before its folder exists, and report progress people expect.

A sweep's progress (runner.sweep.progress: a bar on a terminal, periodic lines elsewhere; each job's
line at debug level), then, at the end of a multirun, the
summary, contact sheets and gallery, and a closing line naming the output folder. All of it is
built from the job folders on disk, so it tells the truth whatever the launcher did.
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runner.sweep import chunks, expansion
from runner.sweep.progress import SweepProgress
from runner.sweep.folders import SWEEP_FOLDER
from runner.config import file_checks
from runner.outputs import records, thumbnails, writers
from runner.config.schema import job_identity, override_strings
from runner.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, UserError, leave, leave_after_callbacks
from runner.config.job_plan import plan_job
from runner.report import build_report

log = logging.getLogger("lcm-run")


class RunnerCallbacks(Callback):
    def __init__(self) -> None:
        self.total: Optional[int] = None
        self.swept: List[str] = []
        self.started = time.perf_counter()
        self.finished = 0
        self.progress: Optional[SweepProgress] = None

    # -- single run -------------------------------------------------------------------------
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra creates the run folder right after this: refuse bad input before it exists.
        # Hydra turns a callback's Exception into a warning, so leave with SystemExit instead (leave).
        if config.get(chunks.KEY):
            leave(EXIT_BAD_INPUT, f"{chunks.KEY}={config[chunks.KEY]!r} groups grid points into one job of a -m "
                  "sweep: add -m.")
        if config.plan:
            report = expansion.check_single(config)
            print(report)
            raise SystemExit(EXIT_BAD_INPUT if "would fail" in report else EXIT_OK)
        try:
            plan_job(config)
            run_dir = Path(str(config.hydra.run.dir))
            file_checks.check_writable("hydra.run.dir", run_dir)
            records.previous_job(run_dir, job_identity(config))
        except UserError as error:
            leave(EXIT_BAD_INPUT, str(error))

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.run.dir)).resolve()
        record = _read_record(folder)
        if record is not None and record.get("status") in ("ok", "skipped"):
            log.info("done: %d image(s) in %s", len(record["images"]), _clock(time.perf_counter() - self.started))
            print(f"Images and run.json in {folder}")

    # -- multirun ---------------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.perf_counter()
        try:
            jobs, self.swept = expansion.expand(config)
        except UserError as error:  # a prompt set that cannot be read
            leave(EXIT_BAD_INPUT, str(error))
        self.total = None if jobs is None else len(jobs)
        self.finished = 0
        if not config.plan:  # a dry run writes nothing, so it claims no folder
            try:  # one sweep per folder; a new time-stamped folder per sweep (runner.sweep.folders)
                file_checks.check_writable("hydra.sweep.dir", Path(str(config.hydra.sweep.dir)).resolve())
                SWEEP_FOLDER.claim(config)
            except UserError as error:
                leave(EXIT_BAD_INPUT, str(error))
        try:
            self._check_jobs(config, jobs)
        except BaseException:  # nothing ran: the folder is let go, and removed if this sweep made it
            SWEEP_FOLDER.unused()
            raise

    def _check_jobs(self, config: DictConfig, jobs: Optional[List[List[str]]]) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        if jobs is None:  # another sweeper: each job is still checked when it starts
            if config.plan:
                leave(EXIT_BAD_INPUT, "plan=true needs lcm-run's sweeper (the default) or Hydra's basic sweeper.")
            return
        # Every job is composed and checked before any runs or loads: a typo in job 401 must not
        # surface after 400 jobs of work.
        try:  # a chunked job is checked, and planned, grid point by grid point
            planned = expansion.plan_jobs(config, chunks.expand_jobs(jobs))
        except UserError as error:
            leave(EXIT_BAD_INPUT, str(error))
        if config.plan:  # a dry run: say what would happen, stop
            cost_ordered = OmegaConf.select(config, "hydra.sweeper.order") == "cost"  # lcm-run's sweeper
            print(expansion.describe(planned, sweep_dir, cost_ordered))
            raise SystemExit(EXIT_BAD_INPUT if any(job.error for job in planned) else EXIT_OK)
        bad = [job for job in planned if job.error]
        if bad and config.on_invalid != "skip":
            listing = "\n".join(f"  job {job.number} ({' '.join(job.overrides)}): {job.error}" for job in bad)
            leave(EXIT_BAD_INPUT, f"{len(bad)} of {len(planned)} jobs are invalid, so none ran:\n{listing}\n"
                  "Fix them, or run the valid ones alone with on_invalid=skip.")
        if bad:
            log.warning("%d invalid job(s) will be recorded as failed without running: %s", len(bad),
                        ", ".join(str(job.number) for job in bad))
        if config.progress.mode != "none":
            self.progress = SweepProgress(len(jobs), config.progress.mode, float(config.progress.every))

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if str(config.hydra.mode) != "RunMode.MULTIRUN":
            return
        position = self.finished + 1  # jobs may run out of grid order (cheapest switches first)
        elapsed = time.perf_counter() - self.started
        chosen = [o for o in override_strings(config.hydra.overrides.task) if o.split("=", 1)[0].lstrip("+~") in self.swept]
        # In a launcher's worker process this callback never saw the sweep start: no position then.
        of_total = f"{position}/{self.total} (#{config.hydra.job.num})" if self.total else f"#{config.hydra.job.num}"
        if self.progress is not None:  # Hydra set up the job's logging anew: its lines clear the bar
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                    handler.addFilter(self.progress.clears)  # once per handler: the same filter object
        log.debug("job %s: %s (elapsed %s)", of_total, " ".join(chosen) or "defaults", _clock(elapsed))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        self.finished += 1
        if self.progress is not None:
            self.progress.job_done(*_outcome(job_return))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        writers.flush()  # the last jobs' images may still be on their way to disk
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        statuses: Dict[str, int] = {}
        for job_dir in {path.parent for path in sweep_dir.glob(f"*/{records.RUN_JSON}")} | _launched(sweep_dir):
            # a launched job without a record failed before it could write one (its folder held
            # another job's results, which are kept): it counts as failed
            status = (_read_record(job_dir) or {"status": "failed"}).get("status", "unknown")
            statuses[status] = statuses.get(status, 0) + 1
        counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())) or "no jobs recorded"
        log.info("sweep done in %s: %s", _clock(time.perf_counter() - self.started), counts)
        try:
            report = build_report(sweep_dir)
        except UserError as error:  # e.g. every job was rejected: say so, keep the sweep's result
            log.warning("no contact sheet or gallery: %s", error)
        else:
            sheets = ", ".join(path.name for path in report["contact_sheets"])
            log.info("contact sheets: %s; gallery: %s", sheets, report["gallery"].name)
        thumbnails.forget()
        SWEEP_FOLDER.release()
        print(f"Sweep results in {sweep_dir}")
        failed = statuses.get("failed", 0)
        if failed:
            leave_after_callbacks(EXIT_FAILED, f"{failed} of {sum(statuses.values())} jobs failed; their run.json files (or, where "
                  f"there is none, their lcm-run.log) and {sweep_dir / 'summary.csv'} say why.")


def _outcome(job_return: Any) -> Tuple[int, str]:
    """(images, status) of a finished job, from what the task returned: its run.json record, a
    chunk's records, or nothing (it failed)."""
    returned = getattr(job_return, "return_value", None) if job_return.status == JobStatus.COMPLETED else None
    found = returned if isinstance(returned, list) else [returned]
    records_ = [record for record in found if isinstance(record, dict)]
    if not records_:
        return 0, "failed"
    images = sum(len(r["images"]) if "images" in r else int(r["config"]["sampling"]["num_images"]) for r in records_)
    statuses = {r.get("status") for r in records_}
    return images, "skipped" if statuses == {"skipped"} else "ok"


def _launched(sweep_dir: Path) -> set:
    """The folders Hydra made for this sweep's jobs (each has Hydra's `.hydra/`)."""
    return {path.parent for path in sweep_dir.glob("*/.hydra")}


def _read_record(folder: Path) -> Optional[Dict[str, Any]]:
    try:
        return records.read_json(folder / records.RUN_JSON)
    except (OSError, ValueError):
        return None


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))
