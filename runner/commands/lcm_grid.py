"""`lcm-grid SWEEP [--x KEY] [--y KEY]`: rebuild a sweep's summary.csv, contact sheets and
index.html from its job folders (for example with other axes)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from runner.errors import EXIT_BAD_INPUT, EXIT_OK, UserError
from runner.report import build_report


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lcm-grid",
        description="Rebuild a sweep's summary.csv, contact sheets and index.html (for example with other axes).")
    parser.add_argument("sweep_dir", type=Path, help="the sweep folder (it holds the numbered job folders)")
    parser.add_argument("--x", help="swept parameter across the sheet (key or label, e.g. sampling.seed)")
    parser.add_argument("--y", help="swept parameter down the sheet")
    args = parser.parse_args(argv)
    try:
        written = build_report(args.sweep_dir, x=args.x, y=args.y)
    except UserError as error:
        print(f"lcm-grid: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for path in [*written["contact_sheets"], written["summary"], written["gallery"]]:
        print(path)
    return EXIT_OK

