"""SLURM task states on clusters that keep no accounting (no `sacct`).

submitit learns a task's state from `sacct`. Without accounting (slurmdbd), every poll fails with a
warning, and a task that ends without a result (cancelled with `scancel`, killed by its node) is
never seen to end: the sweep would wait forever. This watcher asks `sacct` once; if the cluster has
no accounting it says so in one line and asks `squeue` from then on, which lists finished tasks for
the cluster's MinJobAge (300 s by default), so it polls at least once a minute. It is submitit's
own watcher with that fallback, put in place of submitit's for the sweeps lcm-run launches.
"""
from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import time
from pathlib import Path
from typing import Iterator, List, Optional

from submitit.core.utils import UncompletedJobError
from submitit.slurm import slurm  # the `slurm` extra; imported only for hydra/launcher=slurm

from runner.errors import EXIT_FAILED, leave

log = logging.getLogger("lcm-run")

POLL_AT_MOST_S = 60  # below SLURM's default MinJobAge (300 s): a task never ends unseen


class SacctOrSqueueWatcher(slurm.SlurmInfoWatcher):
    """submitit's SlurmInfoWatcher, reading `squeue` where `sacct` is unavailable."""

    sacct_works: Optional[bool] = None

    def update(self) -> None:  # submitit's update, with the fallback
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        if self.sacct_works is not False:
            done = _quiet(command)
            if done is not None and done.returncode == 0:
                self.sacct_works = True
                self._info_dict.update(self.read_info(done.stdout))
            elif self.sacct_works is None:  # it never worked: this cluster keeps no accounting
                self.sacct_works = False
                reason = ((done.stderr.strip().splitlines() or ["failed"])[-1]) if done else "not found"
                log.info("sacct is unavailable (%s): task states are read with squeue", reason)
        if self.sacct_works is False:
            done = _quiet(_squeue_command(command))
            if done is not None and done.returncode == 0:
                self._info_dict.update(self.read_info("JobID|State\n" + done.stdout))
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)


def install() -> None:
    """Use the watcher for the SLURM jobs submitit makes in this process from now on."""
    if not isinstance(slurm.SlurmJob.watcher, SacctOrSqueueWatcher):
        slurm.SlurmJob.watcher = SacctOrSqueueWatcher(delay_s=POLL_AT_MOST_S)


@contextlib.contextmanager
def stopped_tasks_explained(sweep_dir: Path) -> Iterator[None]:
    """A task that ended without a result (cancelled, timed out, its node lost) stops the sweep with
    one paragraph that says which and how to go on, instead of submitit's exception."""
    try:
        yield
    except UncompletedJobError as error:
        text = str(error)
        task = re.search(r"Job (\S+)", text)
        state = re.search(r"state: ([A-Z_]+)", text)
        leave(EXIT_FAILED, f"SLURM task {task.group(1) if task else '?'} ended without finishing its job "
              f"({state.group(1) if state else 'no result'}), so the sweep stopped before its report. The grid "
              f"points that finished are kept in {sweep_dir}: run the same command again to resume (finished "
              f"points are skipped, the rest run). The task's log is in {sweep_dir / '.submitit'}.")


def _squeue_command(sacct_command: List[str]) -> List[str]:
    """squeue for the jobs `sacct_command` asks about: one line per array task, finished ones too."""
    jobs = [sacct_command[i + 1] for i, arg in enumerate(sacct_command) if arg == "-j"]
    return ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T", f"--jobs={','.join(jobs)}"]


def _quiet(command: List[str]) -> Optional[subprocess.CompletedProcess]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
