"""`lcm-grid SWEEP [--x KEY] [--y KEY] [--metrics NAME ...] [--log TRACKER ...]`: rebuild a sweep's
summary.csv, contact sheets, cells.csv, plots and index.html from its job folders (for example with
other axes), scoring its images first with `--metrics` (which loads the scorers: torch is imported
only then), and log its jobs and report to a tracker afterwards with `--log` (runner.tracking)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import OmegaConf

from runner.config import config_dir
from runner.config.schema import MetricConfig, TrackerConfig
from runner.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, UserError
from runner.outputs import records
from runner.report import build_report
from runner.report.sweep_folder import load_sweep


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lcm-grid",
        description="Rebuild a sweep's summary.csv, contact sheets, cells.csv, plots and index.html "
                    "(for example with other axes, or after scoring its images with --metrics).")
    parser.add_argument("sweep_dir", type=Path, help="the sweep folder (it holds the numbered job folders)")
    parser.add_argument("--x", help="swept parameter across the sheet (key or label, e.g. sampling.seed)")
    parser.add_argument("--y", help="swept parameter down the sheet")
    parser.add_argument("--metrics", nargs="+", metavar="NAME", default=[],
                        help="score every image with these metrics first (options of conf/metrics/, e.g. clip_score)")
    parser.add_argument("--log", nargs="+", metavar="TRACKER", default=[], choices=["mlflow", "tensorboard", "wandb"],
                        help="then log every job (one run each, none twice) and the report to these trackers")
    parser.add_argument("--uri", help="the tracker's tracker.uri (default: the sweep's own, else its embedded default)")
    parser.add_argument("--experiment", help="the tracker's tracker.experiment (default: the sweep's own, else lcm-runner)")
    args = parser.parse_args(argv)
    try:
        if args.metrics:
            rescore(args.sweep_dir, args.metrics)
        written = build_report(args.sweep_dir, x=args.x, y=args.y)
    except UserError as error:
        print(f"lcm-grid: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for path in [*written["contact_sheets"], written["summary"], *filter(None, [written["cells"]]),
                 *written["plots"], written["gallery"]]:
        print(path)
    return log_to_trackers(args.sweep_dir, args.log, args.uri, args.experiment)


def log_to_trackers(sweep_dir: Path, kinds: List[str], uri: Optional[str], experiment: Optional[str]) -> int:
    """--log: push the sweep to each tracker (runner.tracking: imported only then)."""
    if not kinds:
        return EXIT_OK
    from runner.tracking import check_installed, open_tracker
    from runner.tracking.logbook import TrackerDown, push_folder

    for kind in kinds:
        settings = recorded_tracker(sweep_dir, kind)
        try:
            check_installed(kind)
            tracker = open_tracker(kind, uri or settings.uri, experiment or settings.experiment, settings.timeout,
                                   sweep_dir.resolve())
            statuses = push_folder(tracker, sweep_dir)
        except UserError as error:
            print(f"lcm-grid: error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except TrackerDown as error:
            print(f"lcm-grid: error: could not log {sweep_dir} to {error}. Nothing else was changed; run the "
                  "same command again once the tracker is reachable: runs already logged are not logged twice.",
                  file=sys.stderr)
            return EXIT_FAILED
        jobs = sum(statuses.values())
        print(f"Logged {jobs} job(s) of {sweep_dir} to {tracker.describe()}")
    return EXIT_OK


def recorded_tracker(sweep_dir: Path, kind: str) -> Any:
    """tracker.* as the sweep's jobs recorded it, where they ran with this tracker; else the defaults."""
    schema = OmegaConf.structured(TrackerConfig)
    for record_file in sorted(Path(sweep_dir).glob(f"*/{records.RUN_JSON}")):
        try:
            recorded = (records.read_json(record_file).get("config") or {}).get("tracker")
        except (OSError, ValueError):
            continue
        if isinstance(recorded, dict) and recorded.get("kind") == kind:
            return OmegaConf.merge(schema, recorded)
        if isinstance(recorded, dict):
            break
    return schema


def rescore(sweep_dir: Path, names: List[str]) -> int:
    """Score every finished job of the sweep with the metric options `names`; returns the jobs scored."""
    options = metric_options(names)
    sweep = load_sweep(sweep_dir)  # a clear error for a folder that is not a sweep
    jobs = sorted({sweep.folder / row.job for row in sweep.rows if (sweep.folder / row.job / records.RUN_JSON).is_file()})
    _check_full_images(jobs)
    from runner.engine.metrics import rescore_job  # torch: only when asked to score

    return sum(rescore_job(job, options) for job in jobs)


def _check_full_images(jobs: List[Path]) -> None:
    """Scores of a thumbnail are not the image's: a sweep run with outputs.keep=thumbnails is refused."""
    for job in jobs:
        try:
            images = records.read_json(job / records.RUN_JSON).get("images") or []
        except (OSError, ValueError):
            continue  # rescore_job passes over it as it does
        if any(image.get("thumbnail") for image in images):
            raise UserError(f"{job} kept thumbnails only (outputs.keep=thumbnails), and a metric of a thumbnail "
                            "is not the image's. Score while the sweep runs (metrics=[...]), or rerun it with "
                            "outputs.keep=all.")


def metric_options(names: List[str]) -> Dict[str, Any]:
    """{name: its entry, on the schema's defaults} from conf/metrics/NAME.yaml, for each name."""
    folder = Path(config_dir()) / "metrics"
    known = sorted(path.stem for path in folder.glob("*.yaml"))
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UserError(f"--metrics {unknown[0]} is not a metric: choose from {', '.join(known)}.")
    schema = OmegaConf.structured(MetricConfig)
    return {name: OmegaConf.merge(schema, OmegaConf.load(folder / f"{name}.yaml")[name]) for name in names}
