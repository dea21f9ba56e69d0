"""A Hydra callback the tracker tests add to a sweep (+hydra.callbacks.stop_server...): it stops the
MLflow server (process group LCM_TEST_SERVER_PGID) when the `after`-th job ends. Listed after the
tracker's callback, its on_job_end runs before the tracker's (Hydra calls on_job_end in reverse order)."""
import os
import signal
import sys
import time

from hydra.experimental.callback import Callback


class StopServer(Callback):
    def __init__(self, after: int) -> None:
        self.after = after
        self.ended = 0

    def on_job_end(self, config, job_return, **kwargs) -> None:
        self.ended += 1
        if self.ended != self.after:
            return
        group = int(os.environ["LCM_TEST_SERVER_PGID"])
        os.killpg(group, signal.SIGTERM)
        for _ in range(600):  # until the whole group is gone, so that the next request is refused
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        print("server stopped", file=sys.stderr)
