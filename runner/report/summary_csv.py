"""summary.csv: one row per image of the sweep (one per job that left none), a column per swept
parameter, then seed, a prompt set's prompt_id and category, a column per metric, file, status, time
and error."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from runner.outputs import records
from runner.report.sweep_folder import Sweep

SUMMARY_CSV = "summary.csv"


def write_summary_csv(sweep: Sweep) -> Path:
    labels = [p.label for p in sweep.params]
    prompted = [name for name in ("prompt_id", "category") if name not in labels] \
        if any(row.prompt_id is not None for row in sweep.rows) else []  # a prompt set's rows
    header = ["job", *labels, *(["seed"] if "seed" not in labels else []), *prompted, *sweep.metrics, "file",
              "status", "time", "error"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for row in sweep.rows:
        fields = {p.label: row.values.get(p.key) for p in sweep.params}
        extra = {name: getattr(row, name) for name in prompted}
        writer.writerow({**fields, **extra, **row.metrics, "job": row.job, "seed": row.seed, "file": row.file, "status": row.status,
                         "time": row.time, "error": row.error})
    path = sweep.folder / SUMMARY_CSV
    records.atomic_write_bytes(path, text.getvalue().encode("utf-8"))
    return path
