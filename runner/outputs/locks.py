"""Folder locks, so that two processes never work in one folder at once.

A lock is an exclusive `flock` on a hidden file in the folder, `.lcm-run.lock`, holding who took it
(pid, host, time) for the message of whoever finds it taken. The kernel drops it when its process
dies however it dies (killed, out of memory, scancel), so a lock is never left stale; over NFS,
Linux maps flock to the server's byte-range locks. The file is removed when the lock is let go.

- a sweep folder: the process running the sweep holds it from start to end; a second sweep into the
  same folder is refused (runner.sweep.folders);
- a job folder: held while the job runs, until its run.json is written; a second process that comes
  to the same job (a task left running by an interrupted sweep, two runs started at once) waits for
  it, then finds the job finished and skips it (runner.run).
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import time
from pathlib import Path
from typing import Optional

LOCK_FILE = ".lcm-run.lock"

log = logging.getLogger("lcm-run")


class FolderLock:
    """An exclusive lock on `folder` (see the module)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False if another process holds it."""
        return self._acquire(wait=False)

    def acquire(self, waiting_message: str = "") -> None:
        """Take the lock, waiting as long as another process holds it."""
        if self._acquire(wait=False):
            return
        if waiting_message:
            log.info("%s (%s); waiting for it", waiting_message, self.holder())
        self._acquire(wait=True)

    def holder(self) -> str:
        """Who holds the lock, as its holder wrote it."""
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # before letting go: whoever waits re-checks the file (_acquire)
        finally:
            os.close(self._fd)  # closing the file lets go of the lock
            self._fd = None

    def _acquire(self, wait: bool) -> bool:
        assert self._fd is None, "this lock is held already"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except OSError as error:
                os.close(fd)
                if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    return False
                raise
            # The holder removes the file before letting go: a lock on a removed file is no lock.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                     .encode())
        self._fd = fd
        return True

    def __del__(self) -> None:  # a lock never outlives its object
        if self._fd is not None:
            os.close(self._fd)
