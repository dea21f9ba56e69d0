"""Every job a tracked run in an experiment tracker (MLflow, TensorBoard, W&B offline), read from the
job folders on disk, so that it is right whatever the launcher did.

`jobs` reads a job folder into what a tracker logs (parameters, metrics, images, tags), `logbook`
decides what to log and when (one run per job, by job identity; a tracker that is down is given up
for the sweep after one warning), and one module per tracker talks to it. Imported only when a
tracker is chosen (`tracker=mlflow` ..., `lcm-grid SWEEP --log mlflow`): the trackers' libraries are
heavy, and a run without one never loads them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from runner.errors import UserError

TRACKERS = ("mlflow", "tensorboard", "wandb")
EXTRAS = {"mlflow": "mlflow", "tensorboard": "tensorboard", "wandb": "wandb"}  # pip package of each


def open_tracker(kind: str, uri: Any, experiment: str, timeout: float, out_dir: Path):
    """The tracker `kind` for the output folder `out_dir` (a sweep's, or a single run's)."""
    if kind == "mlflow":
        from runner.tracking.mlflow_runs import MlflowTracker as chosen
    elif kind == "tensorboard":
        from runner.tracking.tensorboard_runs import TensorboardTracker as chosen
    elif kind == "wandb":
        from runner.tracking.wandb_runs import WandbTracker as chosen
    else:
        raise UserError(f"tracker {kind!r} is not one of {', '.join(TRACKERS)}.")
    return chosen(None if uri is None else str(uri), str(experiment), float(timeout), Path(out_dir))


def concurrent(kind: str, uri: Any) -> bool:
    """Whether several processes may log at once: TensorBoard (a folder per job) and an MLflow server
    (which serialises its writers); not a SQLite file, nor W&B (a service per process)."""
    return kind == "tensorboard" or (kind == "mlflow" and str(uri or "").startswith(("http://", "https://")))


def check_installed(kind: str) -> None:
    """Refuse a tracker whose library is not installed, without importing it (imports are slow)."""
    from importlib.util import find_spec

    if kind in EXTRAS and find_spec(EXTRAS[kind]) is None:
        raise missing_library(kind)


def missing_library(kind: str) -> UserError:
    return UserError(f"tracker={kind} needs the {EXTRAS[kind]} package, which is not installed: "
                     f"pip install \"lcm-runner[{kind}]\" (or choose tracker=none).")
