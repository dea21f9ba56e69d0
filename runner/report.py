"""Everything derived from a sweep's folder, in one call: for the end of a multirun and for lcm-grid.

Torch-free. The files are derived from run.json and the images, so rebuilding replaces them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

from runner.gallery import write_gallery
from runner.grid import write_contact_sheets
from runner.summary import load_sweep, write_summary_csv


def build_report(sweep_dir: Union[str, Path], x: Optional[str] = None, y: Optional[str] = None) -> Dict[str, Any]:
    """Write summary.csv, the contact sheets and index.html; return their paths.

    {"contact_sheets": [Path, ...], "summary": Path, "gallery": Path}. Raises UserError for a
    folder that is not a sweep or an axis that is not a swept parameter, before writing anything.
    """
    sweep = load_sweep(sweep_dir)
    sheets = write_contact_sheets(sweep, x, y)  # first: it checks the axes
    return {"contact_sheets": sheets, "summary": write_summary_csv(sweep), "gallery": write_gallery(sweep, sheets)}
