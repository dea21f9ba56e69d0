"""The background writer: several threads write at once where asked, a new thread count replaces
the shared writer only after what was queued is written, and the thread count follows the device."""
import os
import threading

import pytest
import torch

from runner.outputs import writers


def meeting(barrier, met):
    """A write that finishes only if another write is in flight at the same time."""
    def write():
        try:
            barrier.wait()
            met.append(True)
        except threading.BrokenBarrierError:
            met.append(False)
    return write


@pytest.mark.parametrize("threads, together", [(1, False), (2, True)])
def test_writes_run_side_by_side_only_with_several_threads(threads, together):
    writer, met = writers.BackgroundWriter(threads), []
    barrier = threading.Barrier(2, timeout=1.0)
    writer.submit(meeting(barrier, met))
    writer.submit(meeting(barrier, met))
    writer.close()
    assert len(met) == 2 and all(met) == together


def test_a_new_thread_count_replaces_the_shared_writer_after_its_writes(monkeypatch):
    monkeypatch.setattr(writers, "_shared", None)
    first = writers.shared(1)
    assert writers.shared(1) is first
    done, release = [], threading.Event()
    first.submit(lambda: (release.wait(5), done.append("queued before")))
    threading.Timer(0.2, release.set).start()
    second = writers.shared(2)
    assert done == ["queued before"], "the old writer was flushed first"
    assert second is not first and second.threads == 2 and writers.shared(2) is second
    second.close()


def test_inline_when_the_model_runs_on_the_cpu(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert writers.threads_for("cpu") == 0
    assert writers.threads_for("auto") == 0, "auto on a machine without a GPU is the CPU"
    assert writers.threads_for("cuda:1") == writers.MAX_THREADS
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert writers.threads_for("auto") == writers.MAX_THREADS
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert writers.threads_for("cuda") == 2


def test_no_thread_writes_at_once_in_the_callers_thread(monkeypatch):
    monkeypatch.setattr(writers, "_shared", None)
    writer, seen = writers.shared(0), []
    writer.submit(lambda: seen.append(threading.current_thread()))
    assert seen == [threading.current_thread()], "written before submit returned, in this thread"
    with pytest.raises(OSError):  # a failed write surfaces in the job (its run.json already says why)
        writer.submit(lambda: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    assert writers.shared(2).threads == 2 and writers.shared(0) is not writer
    writers.shared(0).close()
