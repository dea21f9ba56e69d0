"""The tracker's Hydra callback (`tracker=mlflow|tensorboard|wandb`): every job a tracked run.

conf/tracker/ lists it before lcm_runner's callback, so that Hydra, which calls on_multirun_end in
reverse order, calls it once the summary, contact sheets and gallery exist. It runs in whichever
process runs a job (the main process, a joblib worker, a submitit task): there it logs the job's
folders once their run.json is final; at the end the main process logs whatever is left (jobs of
workers that may not write to the tracker, jobs that died) and the sweep's own run. Everything is
read from the job folders on disk (runner.tracking), so each job is one run whatever the launcher did.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from runner.errors import EXIT_BAD_INPUT, UserError, leave
from runner.tracking import check_installed, concurrent, open_tracker
from runner.tracking.jobs import chunk_folders
from runner.tracking.logbook import Logbook


class TrackerCallback(Callback):
    def __init__(self) -> None:
        self.main_pid: Optional[int] = None  # set before the launcher copies this object to its workers
        self.waiting: List[Path] = []  # job folders whose run.json is not final yet
        self._book: Optional[Logbook] = None

    def _logbook(self, config: DictConfig, out_dir: Path) -> Logbook:
        out_dir = out_dir.resolve()
        if self._book is None or self._book.out_dir != out_dir:
            tracker = config.tracker
            opened = _Lazy(tracker.kind, tracker.uri, tracker.experiment, tracker.timeout, out_dir)
            self._book = Logbook(opened, out_dir, config.hydra.runtime.choices.get("experiment"))
        return self._book

    # -- single run -----------------------------------------------------------------------------
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_installed(config)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        book = self._logbook(config, Path(str(config.hydra.runtime.output_dir)))
        book.log_single_run()
        book.close()

    # -- multirun -------------------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_installed(config)
        self.main_pid = os.getpid()
        if not config.plan:  # nothing is written here: the sweep's jobs are not checked yet
            self._logbook(config, Path(str(config.hydra.sweep.dir))).forget_down()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if str(config.hydra.mode) != "RunMode.MULTIRUN":
            return
        book = self._logbook(config, Path(str(config.hydra.sweep.dir)))
        in_main = os.getpid() == self.main_pid
        if not (in_main or book.tracker.concurrent):
            return  # a store only the main process writes: logged at the end of the sweep
        if in_main and book.tracker.parent is None:
            book.start_sweep()  # the jobs were checked and started: the sweep is real
        self.waiting = book.log_folders([*self.waiting, *chunk_folders(Path(str(config.hydra.runtime.output_dir)))])

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from runner.outputs import writers

        writers.flush()
        book = self._logbook(config, Path(str(config.hydra.sweep.dir)))
        book.start_sweep()
        book.finish_sweep()
        book.close()
        self.waiting = []


def _check_installed(config: DictConfig) -> None:
    try:
        check_installed(str(config.tracker.kind))
    except UserError as error:
        leave(EXIT_BAD_INPUT, str(error))


class _Lazy:
    """The tracker, opened at its first use: importing its library takes seconds, and opening a
    store may write (a SQLite file), which must wait until the sweep's jobs have been checked."""

    def __init__(self, *arguments: Any) -> None:
        self.kind = arguments[0]
        self._arguments = arguments
        self._opened: Any = None

    def _tracker(self) -> Any:
        if self._opened is None:
            self._opened = open_tracker(*self._arguments)
        return self._opened

    @property
    def concurrent(self) -> bool:
        return concurrent(self.kind, self._arguments[1])

    def close(self) -> None:
        if self._opened is not None:
            self._opened.close()

    @property
    def parent(self) -> Any:
        return getattr(self._opened, "parent", None) if self._opened is not None else None

    def describe(self) -> str:
        return self._tracker().describe()

    def start_sweep(self, *arguments: Any) -> Any:
        return self._tracker().start_sweep(*arguments)

    def log_job(self, *arguments: Any) -> Any:
        return self._tracker().log_job(*arguments)

    def finish_sweep(self, *arguments: Any) -> Any:
        return self._tracker().finish_sweep(*arguments)

    def __getstate__(self) -> dict:  # a launcher's worker opens its own
        return {**self.__dict__, "_opened": None}
