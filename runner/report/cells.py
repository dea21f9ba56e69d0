"""cells.csv and the metric plots: a sweep's scores per grid cell, best first.

A cell is one combination of the swept parameters other than seed, prompt-set row and category;
its images (all seeds, all prompts) give each metric's mean, standard deviation (ddof=1) and count.
The plots draw each metric against the first numeric cell parameter, a line per value of the next
one, with a band of one standard deviation. Torch-free; matplotlib is imported only to plot.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from runner.outputs import records
from runner.report.sweep_folder import (
    CATEGORY,
    PROMPT,
    SEED,
    Param,
    Sweep,
    display_value,
    ordered_values,
)

CELLS_CSV = "cells.csv"
PLOT_STEM = "plot_"
NOT_CELL = (SEED, PROMPT, CATEGORY)  # what a cell's scores are averaged over


@dataclass(frozen=True)
class Stat:
    mean: float
    std: Optional[float]  # None for a single value
    count: int


def cell_params(sweep: Sweep) -> List[Param]:
    return [p for p in sweep.params if p.key not in NOT_CELL]


def cells(sweep: Sweep) -> List[Tuple[Tuple[Any, ...], Dict[str, Stat]]]:
    """(the cell's parameter values, {metric: Stat}) per cell, best first by the first metric."""
    params, names = cell_params(sweep), sweep.metrics
    scores: Dict[Tuple[Any, ...], Dict[str, List[float]]] = {}
    for row in sweep.rows:
        if row.metrics and all(p.key in row.values for p in params):
            per_cell = scores.setdefault(tuple(row.values[p.key] for p in params), {})
            for name, value in row.metrics.items():
                per_cell.setdefault(name, []).append(float(value))
    table = [(key, {name: _stat(values) for name, values in found.items()}) for key, found in scores.items()]
    first = names[0] if names else None
    return sorted(table, key=lambda cell: -cell[1][first].mean if first in cell[1] else math.inf)


def write_cells_csv(sweep: Sweep) -> Optional[Path]:
    """cells.csv, or None where no image has a metric."""
    names = sweep.metrics
    if not names:
        return None
    params = cell_params(sweep)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([*(p.label for p in params), *(f"{name}_{part}" for name in names for part in ("mean", "std", "count"))])
    for key, stats in cells(sweep):
        values = [display_value(p, value) for p, value in zip(params, key)]
        for name in names:
            stat = stats.get(name)
            values += ["", "", 0] if stat is None else [_number(stat.mean), _number(stat.std), stat.count]
        writer.writerow(values)
    path = sweep.folder / CELLS_CSV
    records.atomic_write_bytes(path, text.getvalue().encode("utf-8"))
    return path


def write_plots(sweep: Sweep) -> List[Path]:
    """plot_<metric>.png and .svg per metric, where a cell parameter is numeric; [] otherwise."""
    params = cell_params(sweep)
    numeric = [p for p in params if _numeric(sweep, p)]
    if not sweep.metrics or not numeric:
        return []
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    x_param = numeric[0]
    line_param = next((p for p in params if p != x_param), None)
    table = cells(sweep)
    written = []
    for name in sweep.metrics:
        figure, axes = pyplot.subplots(figsize=(6.4, 4.2), dpi=100)
        for line_value in ordered_values(key[params.index(line_param)] for key, _ in table) if line_param else [None]:
            points = sorted((key[params.index(x_param)], stats[name]) for key, stats in table if name in stats
                            and (line_param is None or key[params.index(line_param)] == line_value))
            xs = [float(x) for x, _ in points]
            means = [stat.mean for _, stat in points]
            spread = [stat.std or 0.0 for _, stat in points]
            label = None if line_param is None else f"{line_param.label}={display_value(line_param, line_value)}"
            axes.plot(xs, means, marker="o", label=label)
            axes.fill_between(xs, [m - s for m, s in zip(means, spread)], [m + s for m, s in zip(means, spread)],
                              alpha=0.2)
        axes.set_xlabel(x_param.label)
        axes.set_ylabel(name)
        axes.set_title(f"{sweep.folder.name}: {name} (mean ± 1 std over seeds and prompts)")
        if line_param is not None:
            axes.legend(fontsize="small")
        figure.tight_layout()
        for suffix in (".png", ".svg"):
            path = sweep.folder / f"{PLOT_STEM}{name}{suffix}"
            buffer = io.BytesIO()
            figure.savefig(buffer, format=suffix[1:], metadata={"Software": None} if suffix == ".png" else {"Date": None})
            records.atomic_write_bytes(path, buffer.getvalue())
            written.append(path)
        pyplot.close(figure)
    return written


def _stat(values: List[float]) -> Stat:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return Stat(mean, std, len(values))


def _numeric(sweep: Sweep, param: Param) -> bool:
    values = {row.values.get(param.key) for row in sweep.rows} - {None}
    return len(values) > 1 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _number(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.6g}"
