"""`lcm-run`: the Hydra app. Thin on purpose; the work is in runner.run.run(cfg)."""
from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import runner.config  # noqa: F401  (registers the structured schema before Hydra composes)
from runner.run import run

log = logging.getLogger("lcm-run")


def config_dir() -> str:
    """conf/ inside the wheel, or beside the package in a source checkout / editable install."""
    packaged = Path(__file__).parent / "conf"
    return str(packaged if packaged.is_dir() else Path(__file__).parent.parent / "conf")


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except Exception as error:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        # One failed job must not stop a sweep: it is recorded in its run.json, the sweep goes on,
        # and the end-of-sweep callback reports the failures and exits non-zero.
        log.error("job failed (recorded in its run.json): %s", error)




class Interrupted(BaseException):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt: a BaseException, so that Hydra does not file
    it as one job's failure and go on with the sweep."""


def _interrupt(signum, frame) -> None:
    raise Interrupted(signal.Signals(signum).name)


def entry() -> None:
    """The `lcm-run` console script: the Hydra app, stopped cleanly by Ctrl-C or SIGTERM.

    The job in flight is abandoned and recorded as failed; finished jobs stay finished. Running the
    same command again resumes: finished jobs are skipped, the abandoned one is redone."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        main()
    except (KeyboardInterrupt, Interrupted) as stop:
        reason = "Ctrl-C" if isinstance(stop, KeyboardInterrupt) else str(stop)
        print(f"Interrupted ({reason}): finished jobs are kept and the job in flight is recorded as "
              "failed. Run the same command again to resume.", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    entry()
