"""A sweep's index.html: every image with its parameters, filterable, readable straight from disk.

One self-contained file: no server, no external resources, no build step. The images' facts travel as
one JSON array inside the page, and a little inline JavaScript (gallery.js) draws one page of them at a
time, so that a sweep of 10,000 images opens in about the time of a few hundred: filters and sorting
run over the whole array, the DOM holds only the page shown. The URL's hash keeps the page, the
filters and the order (`index.html#seed=3&sort=clip_score&page=2`). Every piece of text from a run
(prompts included) is escaped, in the HTML and in the JSON. Torch-free.
"""
from __future__ import annotations

import json
import math
import re
from html import escape
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence
from urllib.parse import quote

from runner.outputs import records
from runner.report.cells import CELLS_CSV
from runner.report.summary_csv import SUMMARY_CSV
from runner.report.sweep_folder import Param, Row, Sweep, display_value, ordered_values

GALLERY = "index.html"
UNKNOWN = "?"  # the value of a job that left neither run.json nor Hydra's overrides
PROMINENT = ("sampling.prompt", "sampling.negative_prompt")  # shown above the images when shared
PAGE_SIZE = 100  # images drawn at once; the rest wait in the JSON array
DATA_ID = "gallery-data"  # the <script type="application/json"> that holds the images' facts
SCRIPT = (Path(__file__).with_name("gallery.js")).read_text(encoding="utf-8")
PAGE_SUFFIX = re.compile(r"^(?P<sheet>.+)_p(?P<page>\d+)\.png$")  # contact_sheets' page names

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #111; }
.filters label { margin-right: 1em; }
.pager { margin: 8px 0; } .pager button { min-width: 6em; }
.items { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 12px; }
.item { margin: 0; padding: 6px; border: 1px solid #ccc; border-radius: 4px; }
.item img { display: block; max-width: 100%; height: auto; margin: auto; }
.item.problem { background: #fbe3e3; }
.item ul { list-style: none; margin: 4px 0; padding: 0; }
.item pre { white-space: pre-wrap; word-break: break-word; }
.shared dt { font-weight: bold; } .shared dd { margin: 0 0 4px 1em; }
.sheets ul { margin: 4px 0; }
.plots img { max-width: 48%; margin-right: 1%; }
"""


def write_gallery(sweep: Sweep, sheets: List[Path], plots: Sequence[Path] = (),
                  shown: Optional[Mapping[str, str]] = None) -> Path:
    """index.html in the sweep folder. `shown` maps an image file to the file the page shows for it
    (its thumbnail, runner.report.gallery_thumbnails); by default the image itself."""
    images = sum(row.file is not None for row in sweep.rows)
    name = escape(sweep.folder.name)
    pager = ('<nav class="pager"><button type="button" data-go="-1">&lsaquo; previous</button> '
             '<span class="page"></span> <button type="button" data-go="1">next &rsaquo;</button></nav>')
    parts = [
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{name}: sweep gallery</title>',
        f"<style>{STYLE}</style></head>",
        f'<body data-images="{images}" data-loaded="0">',
        f"<h1>Sweep {name}</h1>",
        f'<p>{images} images from {len({row.job for row in sweep.rows})} jobs. <span id="shown"></span>. '
        f'Table: {_link(SUMMARY_CSV, SUMMARY_CSV)}</p>',
        _sheet_index(sweep.folder, sheets),
        _plots(sweep.folder, plots),
        _shared_settings(sweep),
        _filters(sweep),
        pager,
        '<main class="items"></main>',
        pager,
        f'<script type="application/json" id="{DATA_ID}">{_json_in_html(_data(sweep, shown or {}))}</script>',
        f"<script>{SCRIPT}</script>",
        "</body></html>\n",
    ]
    path = sweep.folder / GALLERY
    records.atomic_write_bytes(path, "\n".join(parts).encode("utf-8"))
    return path


def _data(sweep: Sweep, shown: Mapping[str, str]) -> Dict[str, Any]:
    """What gallery.js draws: each parameter's values in their order (a row holds an index into
    them, which is also its sort key) and one entry per image or imageless job."""
    values, metrics = _values(sweep), sweep.metrics  # sweep.metrics walks every row: once
    positions = [{value: i for i, value in enumerate(listed)} for listed in values]
    rows = []
    for row in sweep.rows:
        entry: Dict[str, Any] = {
            "job": row.job, "seed": row.seed, "time": row.time, "status": row.status,
            "v": [positions[i][display_value(p, _raw(p, row))] for i, p in enumerate(sweep.params)],
            "m": [_finite(row.metrics.get(name)) for name in metrics]}
        if row.file is not None:
            entry.update(file=row.file, thumb=shown.get(row.file, row.file))
        else:
            entry["why"] = _why_no_image(row)
        if row.prompt_id in sweep.prompt_texts:
            entry["prompt_id"] = row.prompt_id
        rows.append(entry)
    return {"page_size": PAGE_SIZE, "run_json": records.RUN_JSON,
            "params": [{"label": p.label, "key": p.key, "values": v} for p, v in zip(sweep.params, values)],
            "metrics": metrics, "prompts": sweep.prompt_texts, "rows": rows}


def _values(sweep: Sweep) -> List[List[str]]:
    """Each swept parameter's values as shown, in order (numbers numeric, others as run); values
    that read the same (0 and 0.0) are one."""
    return [list(dict.fromkeys(display_value(p, v) for v in ordered_values(_raw(p, row) for row in sweep.rows)))
            for p in sweep.params]


def _json_in_html(data: Dict[str, Any]) -> str:
    """JSON that no text from a run can end early: <, > and & as JSON escapes, which parse back the same."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _plots(folder: Path, plots: Sequence[Path]) -> str:
    """The metric plots (their PNGs shown, each linking to its SVG) and cells.csv."""
    shown = [path for path in plots if path.suffix == ".png"]
    if not shown:
        return ""
    figures = "".join(f'<a href="{_url(path.with_suffix(".svg").name)}"><img class="plot" src="{_url(path.name)}" '
                      f'alt="{escape(path.stem)}"></a>' for path in shown)
    return f'<section class="plots"><p>Scores per cell, best first: {_link(CELLS_CSV, CELLS_CSV)}</p>{figures}</section>'


def _sheet_index(folder: Path, sheets: List[Path]) -> str:
    """Each contact sheet once, with its pages: a sweep over many values has many sheets."""
    pages: Dict[str, List[Path]] = {}
    for path in sheets:
        match = PAGE_SUFFIX.match(path.name)
        pages.setdefault(match["sheet"] if match else path.stem, []).append(path)
    if not pages:
        return '<nav class="sheets">Contact sheets: none</nav>'
    entries = []
    for sheet, paths in pages.items():
        if len(paths) == 1:
            entries.append(f"<li>{_link(paths[0].relative_to(folder).as_posix(), paths[0].name)}</li>")
        else:
            links = " ".join(_link(path.relative_to(folder).as_posix(), f"page {n}") for n, path in enumerate(paths, 1))
            entries.append(f"<li>{escape(sheet)}: {links}</li>")
    summary = f"Contact sheets: {len(pages)} sheet{'s' * (len(pages) > 1)}, {len(sheets)} file{'s' * (len(sheets) > 1)}"
    opened = " open" if len(pages) <= 12 else ""  # a long index stays folded above the images
    return f'<nav class="sheets"><details{opened}><summary>{summary}</summary><ul>{"".join(entries)}</ul></details></nav>'


def _shared_settings(sweep: Sweep) -> str:
    prominent = "".join(f"<p><b>{escape(key)}</b>: {escape(str(sweep.shared[key]))}</p>"
                        for key in PROMINENT if sweep.shared.get(key) is not None)
    rows = "".join(f"<dt>{escape(key)}</dt><dd>{escape(str(value))}</dd>" for key, value in sweep.shared.items())
    return f'{prominent}<details class="shared"><summary>Settings every job shares</summary><dl>{rows}</dl></details>'


def _filters(sweep: Sweep) -> str:
    """A choice of values per swept parameter, and an order: by any parameter, or best first by a metric."""
    selects, orders = [], []
    for i, (param, values) in enumerate(zip(sweep.params, _values(sweep))):
        options = "".join(f'<option value="{escape(v)}">{escape(v)}</option>' for v in values)
        selects.append(f'<label>{escape(param.label)} <select data-filter="{i}" data-key="{escape(param.label)}">'
                       f'<option value="">all</option>{options}</select></label>')
        orders.append(f'<option value="p{i}" data-key="{escape(param.label)}">{escape(param.label)}</option>')
    orders += [f'<option value="m{i}" data-key="{escape(name)}" data-metric="{escape(name)}">{escape(name)}, best first</option>'
               for i, name in enumerate(sweep.metrics)]  # unscored images last
    selects.append(f'<label>order <select data-sort=""><option value="">as run</option>{"".join(orders)}</select></label>')
    return f'<form class="filters">{"".join(selects)}</form>'


def _why_no_image(row: Row) -> str:
    if row.error:
        return row.error
    return "no run.json: the job never finished" if row.status == "missing" else "no image recorded"


def _finite(score: Optional[float]) -> Optional[float]:
    return score if score is not None and math.isfinite(score) else None  # JSON has no NaN


def _raw(param: Param, row: Row) -> Any:
    return row.values.get(param.key, UNKNOWN)


def _url(relative: str) -> str:
    return escape(quote(relative))


def _link(relative: str, text: str) -> str:
    return f'<a href="{_url(relative)}">{escape(text)}</a>'
