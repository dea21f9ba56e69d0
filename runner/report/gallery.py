"""A sweep's index.html: every image with its parameters, filterable, readable straight from disk.

One self-contained file: no server, no external resources, a little inline JavaScript for the
filters. Every piece of text from a run (prompts included) is escaped. Torch-free.
"""
from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any, Dict, List, Sequence
from urllib.parse import quote

from runner.outputs import records
from runner.report.cells import CELLS_CSV
from runner.report.summary_csv import SUMMARY_CSV
from runner.report.sweep_folder import Param, Row, Sweep, display_value, ordered_values

GALLERY = "index.html"
UNKNOWN = "?"  # the value of a job that left neither run.json nor Hydra's overrides
PROMINENT = ("sampling.prompt", "sampling.negative_prompt")  # shown above the images when shared

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #111; }
.filters label { margin-right: 1em; }
.items { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 12px; }
.item { margin: 0; padding: 6px; border: 1px solid #ccc; border-radius: 4px; }
.item img { display: block; max-width: 100%; height: auto; margin: auto; }
.item.problem { background: #fbe3e3; }
.item ul { list-style: none; margin: 4px 0; padding: 0; }
.item pre { white-space: pre-wrap; word-break: break-word; }
.shared dt { font-weight: bold; } .shared dd { margin: 0 0 4px 1em; }
.plots img { max-width: 48%; margin-right: 1%; }
"""

# Filters hide the items that do not match every chosen value. Each thumbnail marks whether it
# decoded (data-loaded), and <body data-loaded> counts those that did: broken links show at once.
SCRIPT = """
const items = [...document.querySelectorAll('.item')];
const filters = [...document.querySelectorAll('select[data-filter]')];
function applyFilters() {
  let shown = 0;
  for (const item of items) {
    item.hidden = !filters.every(f => !f.value || item.dataset['v' + f.dataset.filter] === f.value);
    shown += item.hidden ? 0 : 1;
  }
  document.getElementById('shown').textContent = shown + ' of ' + items.length + ' shown';
}
filters.forEach(f => f.addEventListener('change', applyFilters));
applyFilters();
const order = document.querySelector('select[data-sort]');
if (order) order.addEventListener('change', () => {
  const key = order.value, main = document.querySelector('.items');
  const value = item => key ? -parseFloat(item.dataset['m' + key] ?? 'Infinity') : items.indexOf(item);
  [...items].sort((a, b) => value(a) - value(b)).forEach(item => main.appendChild(item));
});
const wanted = new URLSearchParams(location.hash.slice(1)).get('sort');  // index.html#sort=clip_score
if (order && wanted) {
  order.value = [...order.options].find(option => option.dataset.metric === wanted)?.value ?? '';
  order.dispatchEvent(new Event('change'));
}
let loaded = 0;
function mark(img) {
  img.dataset.loaded = img.naturalWidth > 0 ? 'yes' : 'no';
  if (img.naturalWidth > 0) document.body.dataset.loaded = ++loaded;
}
for (const img of document.querySelectorAll('img.thumb')) {
  if (img.complete) mark(img);
  else ['load', 'error'].forEach(event => img.addEventListener(event, () => mark(img)));
}
"""


def write_gallery(sweep: Sweep, sheets: List[Path], plots: Sequence[Path] = ()) -> Path:
    images = sum(row.file is not None for row in sweep.rows)
    name = escape(sweep.folder.name)
    parts = [
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{name}: sweep gallery</title>',
        f"<style>{STYLE}</style></head>",
        f'<body data-images="{images}" data-loaded="0">',
        f"<h1>Sweep {name}</h1>",
        f'<p>{images} images from {len({row.job for row in sweep.rows})} jobs. <span id="shown"></span>. '
        f'Table: {_link(SUMMARY_CSV, SUMMARY_CSV)}</p>',
        _sheet_links(sweep.folder, sheets),
        _plots(sweep.folder, plots),
        _shared_settings(sweep),
        _filters(sweep),
        '<main class="items">',
        *(_item(sweep.params, row, sweep.prompt_texts, sweep.metrics) for row in sweep.rows),
        "</main>",
        f"<script>{SCRIPT}</script>",
        "</body></html>\n",
    ]
    path = sweep.folder / GALLERY
    records.atomic_write_bytes(path, "\n".join(parts).encode("utf-8"))
    return path


def _plots(folder: Path, plots: Sequence[Path]) -> str:
    """The metric plots (their PNGs shown, each linking to its SVG) and cells.csv."""
    shown = [path for path in plots if path.suffix == ".png"]
    if not shown:
        return ""
    figures = "".join(f'<a href="{_url(path.with_suffix(".svg").name)}"><img class="plot" src="{_url(path.name)}" '
                      f'alt="{escape(path.stem)}"></a>' for path in shown)
    return f'<section class="plots"><p>Scores per cell, best first: {_link(CELLS_CSV, CELLS_CSV)}</p>{figures}</section>'


def _sheet_links(folder: Path, sheets: List[Path]) -> str:
    links = " ".join(_link(path.relative_to(folder).as_posix(), path.name) for path in sheets)
    return f'<nav class="sheets">Contact sheets: {links or "none"}</nav>'


def _shared_settings(sweep: Sweep) -> str:
    prominent = "".join(f"<p><b>{escape(key)}</b>: {escape(str(sweep.shared[key]))}</p>"
                        for key in PROMINENT if sweep.shared.get(key) is not None)
    rows = "".join(f"<dt>{escape(key)}</dt><dd>{escape(str(value))}</dd>" for key, value in sweep.shared.items())
    return f'{prominent}<details class="shared"><summary>Settings every job shares</summary><dl>{rows}</dl></details>'


def _filters(sweep: Sweep) -> str:
    selects = []
    for i, param in enumerate(sweep.params):
        values = ordered_values(_raw(param, row) for row in sweep.rows)
        options = "".join(f'<option value="{_shown(param, v)}">{_shown(param, v)}</option>' for v in values)
        selects.append(f'<label>{escape(param.label)} <select data-filter="{i}">'
                       f'<option value="">all</option>{options}</select></label>')
    if sweep.metrics:  # best first by the chosen metric; unscored images last
        options = "".join(f'<option value="{i}" data-metric="{escape(name)}">{escape(name)}, best first</option>'
                          for i, name in enumerate(sweep.metrics))
        selects.append(f'<label>order <select data-sort=""><option value="">as run</option>{options}</select></label>')
    return f'<form class="filters">{"".join(selects)}</form>'


def _item(params: List[Param], row: Row, prompt_texts: Dict[str, str], metrics: List[str]) -> str:
    settings = [f"{escape(p.label)}={_shown(p, _raw(p, row))}" for p in params]
    settings += [f"{escape(name)}={row.metrics[name]:.4g}" for name in metrics if name in row.metrics]
    prompt = prompt_texts.get(row.prompt_id or "")
    if prompt:  # a prompt set's row: the text beside its id, cut short
        settings.append(f'<span class="prompt" title="{escape(prompt)}">{escape(_short(prompt))}</span>')
    data = "".join(f' data-v{i}="{_shown(p, _raw(p, row))}"' for i, p in enumerate(params))
    data += "".join(f' data-m{i}="{row.metrics[name]!r}"' for i, name in enumerate(metrics) if name in row.metrics)
    time = f" · {row.time:.2f} s" if row.time is not None else ""
    facts = (f"job {escape(row.job)} · seed {escape(str(row.seed))}{time} · {escape(row.status)} · "
             f"{_link(f'{row.job}/{records.RUN_JSON}', records.RUN_JSON)}")
    if row.file is not None:
        alt = f"job {escape(row.job)}: " + ", ".join(settings)
        # loading="lazy": a browser fetches only the images near the screen, however many the sweep made
        shown = (f'<a href="{_url(row.file)}"><img class="thumb" loading="lazy" decoding="async" '
                 f'src="{_url(row.file)}" alt="{alt}"></a>')
    else:
        shown = f"<pre>{escape(row.status)}: {escape(_why_no_image(row))}</pre>"
    problem = " problem" if row.status not in ("ok", "skipped") else ""
    listed = "".join(f"<li>{setting}</li>" for setting in settings)
    return f'<figure class="item{problem}"{data}>{shown}<figcaption><ul>{listed}</ul>{facts}</figcaption></figure>'


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _why_no_image(row: Row) -> str:
    if row.error:
        return row.error
    return "no run.json: the job never finished" if row.status == "missing" else "no image recorded"


def _raw(param: Param, row: Row) -> Any:
    return row.values.get(param.key, UNKNOWN)


def _shown(param: Param, value: Any) -> str:
    return escape(display_value(param, value))


def _url(relative: str) -> str:
    return escape(quote(relative))


def _link(relative: str, text: str) -> str:
    return f'<a href="{_url(relative)}">{escape(text)}</a>'
