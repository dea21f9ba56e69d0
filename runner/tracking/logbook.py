"""What is logged, when, and what happens when a tracker is down.

One run per job folder, keyed by the sweep's folder and the job's identity: a job already logged as
finished is not logged again (a resumed sweep, a push after the sweep), one logged as failed or
unfinished is replaced (never two runs for one job). A tracker that fails is given up for the rest
of the sweep after one warning, in every process of the sweep: a marker file in the sweep's folder
tells the launcher's other workers. Nothing here can fail a job or cost its images.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

from runner.tracking import jobs as tracked

log = logging.getLogger("lcm-run")
DOWN_MARKER = ".tracker-down"  # in the output folder: this sweep gave its tracker up


class TrackerDown(Exception):
    """The tracker could not be reached or refused what was logged."""


class Logbook:
    def __init__(self, tracker: Any, out_dir: Path, experiment: Optional[str], strict: bool = False) -> None:
        self.tracker = tracker
        self.out_dir = Path(out_dir).resolve()
        self.experiment = experiment  # the `experiment=` choice, a tag of every run
        self.strict = strict  # raise TrackerDown instead of warning (lcm-grid --log: the push is the command)
        self._gave_up = False

    # -- being down -----------------------------------------------------------------------------
    @property
    def marker(self) -> Path:
        return self.out_dir / DOWN_MARKER

    def down(self) -> bool:
        return self._gave_up or (not self.strict and self.marker.exists())

    def forget_down(self) -> None:
        """A new sweep (or a resume of one) tries its tracker afresh."""
        self.marker.unlink(missing_ok=True)
        self._gave_up = False

    def attempt(self, action: Callable[..., Any], *args: Any) -> Any:
        """action(*args), unless the tracker is given up; a failure gives it up (one warning)."""
        if self.down():
            return None
        try:
            return action(*args)
        except Exception as error:
            message = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
            if self.strict:
                raise TrackerDown(f"{self.tracker.describe()}: {message}") from error
            self._gave_up = True
            if not self.marker.exists():  # the first process to fail says so; the others stop quietly
                try:
                    self.marker.write_text(message + "\n", encoding="utf-8")
                except OSError:
                    pass
                log.warning("tracker %s failed (%s): no more runs are logged in this sweep; the images and "
                            "run.json files are not affected. Log them later with lcm-grid %s --log %s.",
                            self.tracker.describe(), message, self.out_dir, self.tracker.kind)
            return None

    # -- logging --------------------------------------------------------------------------------
    def start_sweep(self) -> None:
        self.attempt(self.tracker.start_sweep, self.out_dir, self.experiment)

    def log_folders(self, folders: Iterable[Path]) -> List[Path]:
        """Log each job folder that is final; return those that are not yet (to try again later)."""
        waiting = []
        for folder in folders:
            if self.down():
                break
            job = tracked.read_job(folder, self.out_dir, self.experiment)
            if job is None:
                waiting.append(folder)
            else:
                self.attempt(self.tracker.log_job, job)
        return waiting

    def finish_sweep(self) -> Dict[str, int]:
        """Every job not logged yet, then the sweep's own run with the report files; the jobs' statuses."""
        statuses: Dict[str, int] = {}
        for folder in tracked.job_folders(self.out_dir):
            job = tracked.read_job(folder, self.out_dir, self.experiment)
            status = job.status if job is not None else "missing"
            statuses[status] = statuses.get(status, 0) + 1
            if job is not None:
                self.attempt(self.tracker.log_job, job)
        self.attempt(self.tracker.finish_sweep, self.out_dir, tracked.report_files(self.out_dir), statuses)
        return statuses

    def log_single_run(self) -> None:
        job = tracked.read_job(self.out_dir, self.out_dir, self.experiment)
        if job is not None:
            self.attempt(self.tracker.log_job, job)

    def close(self) -> None:
        try:
            self.tracker.close()
        except Exception:  # closing a tracker that is down: nothing left to lose
            pass


def push_folder(tracker: Any, out_dir: Path) -> Dict[str, int]:
    """`lcm-grid SWEEP --log KIND`: log a finished sweep's jobs and report, skipping what is already logged."""
    book = Logbook(tracker, out_dir, tracked.experiment_choice(Path(out_dir)), strict=True)
    try:
        book.start_sweep()
        return book.finish_sweep()
    finally:
        book.close()
