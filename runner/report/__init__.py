"""Everything derived from a sweep's folder, in one call: for the end of a multirun and for lcm-grid.

Torch-free: `sweep_folder` reads the job folders (run.json, else Hydra's overrides), `summary_csv`,
`contact_sheets`, `gallery_thumbnails` and `gallery` write what a person looks at. The files are derived from run.json and the images, so rebuilding replaces them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

from runner.report.cells import write_cells_csv, write_plots
from runner.report.contact_sheets import write_contact_sheets
from runner.report.gallery import write_gallery
from runner.report.gallery_thumbnails import write_gallery_thumbnails
from runner.report.summary_csv import write_summary_csv
from runner.report.sweep_folder import load_sweep


def build_report(sweep_dir: Union[str, Path], x: Optional[str] = None, y: Optional[str] = None) -> Dict[str, Any]:
    """Write summary.csv, the contact sheets, cells.csv and the metric plots (where images have
    metrics) and index.html; return their paths.

    {"contact_sheets": [Path, ...], "summary": Path, "cells": Path or None, "plots": [Path, ...],
    "gallery": Path}. Raises UserError for a folder that is not a sweep or an axis that is not a swept
    parameter, before writing anything.
    """
    sweep = load_sweep(sweep_dir)
    sheets = write_contact_sheets(sweep, x, y)  # first: it checks the axes
    written = {"contact_sheets": sheets, "summary": write_summary_csv(sweep), "cells": write_cells_csv(sweep),
               "plots": write_plots(sweep)}
    shown = write_gallery_thumbnails(sweep)  # while the writer's kept thumbnails are still in memory
    return {**written, "gallery": write_gallery(sweep, sheets, written["plots"], shown)}
