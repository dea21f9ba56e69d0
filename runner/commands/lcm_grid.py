"""`lcm-grid SWEEP [--x KEY] [--y KEY] [--metrics NAME ...]`: rebuild a sweep's summary.csv, contact
sheets, cells.csv, plots and index.html from its job folders (for example with other axes), scoring
its images first with `--metrics` (which loads the scorers: torch is imported only then)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import OmegaConf

from runner.config import config_dir
from runner.config.schema import MetricConfig
from runner.errors import EXIT_BAD_INPUT, EXIT_OK, UserError
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
    return EXIT_OK


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
