"""A sweep's progress in one place: jobs and images done, rate, ETA, failures so far.

On a terminal, one line redrawn in place (a bar); elsewhere (a log file, SLURM's output), a plain
line every `every` seconds and one at the end, so that 10,000 jobs do not bury everything else.
Per-job lines are at debug level (`hydra.verbose=lcm-run` shows them).
"""
from __future__ import annotations

import logging
import shutil
import sys
import time
from datetime import timedelta
from typing import Optional, TextIO

log = logging.getLogger("lcm-run")
BAR_WIDTH = 24


class SweepProgress:
    def __init__(self, total: int, mode: str = "auto", every: float = 30.0, stream: Optional[TextIO] = None) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if _is_terminal(self.stream) else "lines"
        self.mode = mode
        self.total = total
        self.every = every
        self.started = time.perf_counter()
        self.last_line = self.started
        self.jobs = self.images = self.failed = self.skipped = 0
        self.shown = False  # a bar is on screen: a log line must clear it first
        self.clears = ClearsProgress(self)  # the filter the console's handlers get

    def job_done(self, images: int, status: str) -> None:
        self.jobs += 1
        self.images += images
        self.failed += status == "failed"
        self.skipped += status == "skipped"
        now = time.perf_counter()
        if self.mode == "bar":
            self._draw()
        elif self.mode == "lines" and (now - self.last_line >= self.every or self.jobs == self.total):
            self.last_line = now
            log.info("progress: %s", self.summary())

    def summary(self) -> str:
        elapsed = time.perf_counter() - self.started
        ran = self.jobs - self.skipped  # skipped jobs (resume) cost nothing: they would skew the rate
        rate = ran / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.jobs}/{self.total} jobs", f"{self.images} images", f"{rate:.2f} jobs/s"]
        left = self.total - self.jobs
        if left and rate > 0:
            parts.append(f"ETA {_clock(left / rate)}")
        parts.append(f"elapsed {_clock(elapsed)}")
        if self.skipped:
            parts.append(f"{self.skipped} already done")
        if self.failed:
            parts.append(f"{self.failed} failed")
        return ", ".join(parts)

    def clear(self) -> None:
        """Take the bar off the screen (before other output, and at the end)."""
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.shown = False

    def close(self) -> None:
        if self.mode == "bar":
            self.clear()
            log.info("progress: %s", self.summary())

    def _draw(self) -> None:
        done = int(BAR_WIDTH * self.jobs / max(1, self.total))
        line = f"[{'#' * done}{'.' * (BAR_WIDTH - done)}] {self.summary()}"
        width = shutil.get_terminal_size((120, 20)).columns - 1
        self.stream.write("\r\033[K" + line[:width])
        self.stream.flush()
        self.shown = True


class ClearsProgress(logging.Filter):
    """Attached to the console handlers: a log line first takes the bar off its line."""

    def __init__(self, progress: SweepProgress) -> None:
        super().__init__()
        self.progress = progress

    def filter(self, record: logging.LogRecord) -> bool:
        self.progress.clear()
        return True


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))
