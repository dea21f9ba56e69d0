"""Writing a job's files off the critical path: one background thread encodes its PNGs (with their
metadata) and then writes its run.json, while the next job denoises. A job reports success — run.json
with status "ok" — only once its images are on disk; a failed write is recorded as a failed job.
`flush()` waits for everything queued (the end-of-sweep report calls it before reading the folders).
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Callable, List, Optional

MAX_PENDING = 4  # jobs whose images wait in memory for the writer, at most


class BackgroundWriter:
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lcm-writer")
        self._pending: List[Future] = []
        self._lock = threading.Lock()

    def submit(self, write: Callable[[], None]) -> None:
        with self._lock:
            self._pending = [f for f in self._pending if not f.done()]
            if len(self._pending) >= MAX_PENDING:  # the writer fell behind: let it catch up
                wait(self._pending[:1])
            self._pending.append(self._pool.submit(write))

    def flush(self) -> None:
        """Wait for every queued write. Failures are already recorded in their job's run.json."""
        with self._lock:
            pending, self._pending = self._pending, []
        wait(pending)


_shared: Optional[BackgroundWriter] = None


def shared() -> BackgroundWriter:
    """The process's writer (created on first use)."""
    global _shared
    if _shared is None:
        _shared = BackgroundWriter()
    return _shared


def flush() -> None:
    if _shared is not None:
        _shared.flush()
