"""Writing a job's files off the critical path: background threads encode its PNGs (with their
metadata) and then write its run.json, while the next job denoises. A job reports success — run.json
with status "ok" — only once its images are on disk; a failed write is recorded as a failed job.
`flush()` waits for everything queued (the end-of-sweep report calls it before reading the folders).

Several threads where the cores are free: PNG encoding runs in C with the GIL released, and one
thread encodes a 1024² image slower than a GPU makes one. None when the model runs on the CPU: a
writer thread there takes cores from the denoising, whose OpenMP threads then wait on each other,
so the files are written inline, as the hand loop writes them (figures: docs/performance.md).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Callable, List, Optional, Union

MAX_THREADS = 4
PENDING_PER_THREAD = 4  # jobs whose images wait in memory for the writer, at most, per thread


class BackgroundWriter:
    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lcm-writer")
        self._pending: List[Future] = []
        self._lock = threading.Lock()

    def submit(self, write: Callable[[], None]) -> None:
        with self._lock:
            self._pending = [f for f in self._pending if not f.done()]
            if len(self._pending) >= PENDING_PER_THREAD * self.threads:  # behind: let it catch up
                wait(self._pending[:1])
            self._pending.append(self._pool.submit(write))

    def flush(self) -> None:
        """Wait for every queued write. Failures are already recorded in their job's run.json."""
        with self._lock:
            pending, self._pending = self._pending, []
        wait(pending)

    def close(self) -> None:
        self.flush()
        self._pool.shutdown()


class InlineWriter:
    """The writer's interface, writing at once in the caller's thread."""

    threads = 0

    def submit(self, write: Callable[[], None]) -> None:
        write()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def threads_for(device_type: str) -> int:
    """How many threads write a sweep's images: none (inline) when the model runs on the CPU, whose
    cores are busy denoising; else one per core, up to MAX_THREADS."""
    if device_type == "cpu":
        return 0
    if device_type == "auto":
        import torch  # loaded by then: the job itself needs it

        if not (torch.cuda.is_available() or torch.backends.mps.is_available()):
            return 0
    return max(1, min(MAX_THREADS, os.cpu_count() or 1))


Writer = Union[BackgroundWriter, InlineWriter]
_shared: Optional[Writer] = None


def shared(threads: int = 1) -> Writer:
    """The process's writer, with this many threads, 0 for inline (created on first use; an earlier
    one with another count is flushed and replaced)."""
    global _shared
    if _shared is not None and _shared.threads != threads:
        _shared.close()
        _shared = None
    if _shared is None:
        _shared = BackgroundWriter(threads) if threads else InlineWriter()
    return _shared


def flush() -> None:
    if _shared is not None:
        _shared.flush()
