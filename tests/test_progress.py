"""A sweep's progress: a bar redrawn in place on a terminal, plain periodic lines elsewhere."""
import io
import logging

from runner.sweep.progress import ClearsProgress, SweepProgress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_one_line_is_redrawn_with_jobs_images_rate_eta_and_failures(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the bar is cut to the terminal's width
    screen = Terminal()
    progress = SweepProgress(total=4, mode="auto", stream=screen)
    assert progress.mode == "bar"
    progress.job_done(2, "ok")
    progress.job_done(0, "failed")
    drawn = screen.getvalue()
    assert "\n" not in drawn, "redrawn in place, never a new line"
    last = drawn.split("\r\x1b[K")[-1]
    assert last.startswith("[############............] 2/4 jobs, 2 images, ")
    assert "jobs/s" in last and "ETA" in last and last.endswith("1 failed")


def test_a_log_line_takes_the_bar_off_its_line_first(caplog):
    screen = Terminal()
    progress = SweepProgress(total=2, mode="bar", stream=screen)
    progress.job_done(1, "ok")
    record = logging.LogRecord("lcm-run", logging.WARNING, __file__, 1, "careful", None, None)
    assert ClearsProgress(progress).filter(record)
    assert screen.getvalue().endswith("\r\x1b[K") and not progress.shown


def test_elsewhere_plain_lines_come_every_interval_and_at_the_end(caplog):
    caplog.set_level(logging.INFO, logger="lcm-run")
    progress = SweepProgress(total=3, mode="auto", every=3600, stream=io.StringIO())
    assert progress.mode == "lines"
    progress.job_done(1, "skipped")
    progress.job_done(1, "ok")
    assert not caplog.records, "the interval has not passed"
    progress.job_done(1, "ok")
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("progress: 3/3 jobs, 3 images, ") and "1 already done" in line
    caplog.clear()
    every_job = SweepProgress(total=5, mode="lines", every=1e-9, stream=io.StringIO())
    for _ in range(5):
        every_job.job_done(1, "ok")
    assert len(caplog.records) == 5 and "ETA" in caplog.records[0].getMessage()
