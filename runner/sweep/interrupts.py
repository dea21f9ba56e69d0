"""Ctrl-C and SIGTERM for `lcm-run`, held back while a config shared across jobs is being changed.

A signal is raised in whatever Python line runs when it arrives. Raised in the middle of an
OmegaConf assignment, it leaves a half-attached node behind, and OmegaConf's own clean-up then fails
with an unrelated AttributeError instead of a clean stop. The sweeper changes its shared config in
place for every job (runner.sweep.expansion.ComposedJob.applied) inside `held()`: a signal that arrives
then is raised the moment the change is complete. Outside `lcm-run` (tests, notebooks) nothing is
installed and `held()` changes nothing.
"""
from __future__ import annotations

import contextlib
import signal
from typing import Iterator, Optional


class Interrupted(BaseException):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt: a BaseException, so that Hydra does not file
    it as one job's failure and go on with the sweep."""


_depth = 0
_pending: Optional[BaseException] = None


def install() -> None:
    """Route SIGTERM and SIGINT through `_on_signal` (the CLI calls this once)."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def _on_signal(signum, frame) -> None:
    global _pending
    stop = KeyboardInterrupt() if signum == signal.SIGINT else Interrupted(signal.Signals(signum).name)
    if _depth:
        _pending = stop
        return
    raise stop


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Run the block whole: a signal arriving inside it is raised at its end."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending is not None:
            stop, _pending = _pending, None
            raise stop
