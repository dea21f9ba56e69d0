"""Contact sheets of a sweep, like AUTOMATIC1111's X/Y/Z plot, and the `lcm-grid` command.

X is the first swept parameter, Y the second; every combination of the values of the others gets
its own sheet. Cells hold thumbnails (at most thumbnails.THUMB px on their long side, so that a big sweep
stays a readable file) or a grey placeholder saying why an image is absent. Torch-free.
"""
from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from PIL import Image, ImageDraw, ImageFont

from runner.errors import UserError
from runner.outputs import records, thumbnails
from runner.report.sweep_folder import (
    CATEGORY,
    PROMPT,
    Param,
    Row,
    Sweep,
    display_value,
    load_sweep,
    ordered_values,
)

SHEET_STEM = "contact_sheet"
MAX_NAME_BODY = 200  # characters of a sheet's file name after the stem (slugs are ASCII)
MIN_CELL = 128  # cells of tiny images stay wide enough for their labels
GAP = 4
FONT_SIZE = 14
LINE = 18  # px per line of text
MAX_SCORE_LINES = 3  # scores printed under an image
MAX_SIDE = 16384  # px: a sheet longer than this is split into pages (most viewers open up to it)
LEFT_W = 200  # the column of Y labels
TOP_H = 3 * LINE + GAP  # the band of X labels (three lines at the most)
TITLE_H = 2 * LINE + GAP
BACKGROUND = (255, 255, 255)
CELL = (240, 240, 240)  # behind a thumbnail smaller than its cell, so that the grid reads as one
PLACEHOLDER = (190, 190, 190)
INK = (0, 0, 0)

Axes = Tuple[Optional[Param], Optional[Param], List[Param]]
Axis = Tuple[Optional[Param], List[Any]]  # a parameter (None: a single line of cells) and its values


def build_contact_sheets(sweep_dir: Union[str, Path], x: Optional[str] = None, y: Optional[str] = None) -> List[Path]:
    return write_contact_sheets(load_sweep(sweep_dir), x, y)


def write_contact_sheets(sweep: Sweep, x: Optional[str] = None, y: Optional[str] = None) -> List[Path]:
    """Write one sheet per combination of the parameters off the axes; drop sheets of older layouts."""
    x_param, y_param, rest = choose_axes(sweep, x, y)
    placed = [row for row in sweep.rows if all(p.key in row.values for p in sweep.params)]
    columns, lines = _axis_values(placed, x_param), _axis_values(placed, y_param)
    sheets = _split_by(placed, rest)

    grouped = any(p.key == CATEGORY for p in rest)  # a category's sheet shows its own prompts only

    def write(sheet: Tuple[Tuple[Any, ...], List[Row]]) -> List[Path]:
        rest_values, rows = sheet
        pairs = list(zip(rest, rest_values))
        name = f"{SHEET_STEM}.png" if len(sheets) == 1 else _sheet_file_name(pairs)
        title = "   ".join([sweep.folder.name, *(_label(p, v) for p, v in pairs), _axes_note(x_param, y_param)])
        own_columns, own_lines = (_axis_values(rows, x_param), _axis_values(rows, y_param)) if grouped else \
            (columns, lines)
        layout = _layout(sweep.folder, rows, x_param, y_param, own_columns, own_lines)
        pages = _pages(layout, own_columns, own_lines)
        paths = []
        for number, (page_columns, page_lines) in enumerate(pages, 1):
            path = sweep.folder / (name if len(pages) == 1 else name.replace(".png", f"_p{number}.png"))
            page_title = title if len(pages) == 1 else f"{title}   page {number} of {len(pages)}"
            records.save_png(path, _draw_sheet(layout, (x_param, page_columns), (y_param, page_lines), page_title,
                                               sweep.prompt_texts))
            paths.append(path)
        return paths

    # Sheets are drawn and encoded side by side (Pillow's encoder releases the GIL): the sweep's model
    # work is over, and a sheet's PNG is most of the report's time.
    with ThreadPoolExecutor(max_workers=max(1, min(len(sheets), os.cpu_count() or 1))) as pool:
        written = [path for pages in pool.map(write, sheets) for path in pages]
    # Sheets of an earlier layout (other axes) would pass for current ones: only names this module
    # gives are removed.
    earlier = [sweep.folder / f"{SHEET_STEM}.png", *sweep.folder.glob(f"{SHEET_STEM}_*=*.png"),
               *sweep.folder.glob(f"{SHEET_STEM}_p*.png")]
    records.remove_all(path for path in earlier if path not in written)
    return written


def choose_axes(sweep: Sweep, x: Optional[str] = None, y: Optional[str] = None) -> Axes:
    """X and Y (by key or label; by default the first two swept parameters) and the rest."""
    x_param = sweep.param(x) if x else None
    y_param = sweep.param(y) if y else None
    if x_param is not None and x_param == y_param:
        raise UserError(f"--x and --y both name {x_param.label}: choose two different swept parameters")
    free = [p for p in sweep.params if p not in (x_param, y_param)]
    if x_param is None and free:
        x_param = free.pop(0)
    if y_param is None and free:
        y_param = free.pop(0)
    return x_param, y_param, free


# -- layout -----------------------------------------------------------------------------------
def _axis_values(rows: List[Row], param: Optional[Param]) -> List[Any]:
    """The values along an axis over the whole sweep, so that every sheet has the same layout."""
    if param is None:
        return [None]
    return ordered_values(row.values[param.key] for row in rows)


def _split_by(rows: List[Row], params: List[Param]) -> List[Tuple[Tuple[Any, ...], List[Row]]]:
    """The combinations of values of `params` that some row has, each with its rows, in the order of
    each parameter's values. Only the combinations present are visited: their full product can be
    astronomically large when many keys vary together."""
    axes = [_axis_values(rows, p) for p in params]
    split: Dict[Tuple[int, ...], List[Row]] = {}
    for row in rows:  # each value's position on its axis: hashable, whatever the value
        position = tuple(axis.index(row.values[p.key]) for p, axis in zip(params, axes))
        split.setdefault(position, []).append(row)
    return [(tuple(axis[i] for axis, i in zip(axes, position)), split[position]) for position in sorted(split)]


@dataclass
class _Layout:
    """A sheet's cells, by (x value, y value), and the size every cell gets."""
    cells: Dict[Tuple[Any, Any], Tuple[Union[Image.Image, str], Optional[Row]]]
    cell_w: int
    cell_h: int
    score_h: int  # the lines of scores under each image


def _layout(folder: Path, rows: List[Row], x_param: Optional[Param], y_param: Optional[Param],
            columns: List[Any], lines: List[Any]) -> _Layout:
    cells = {(x, y): _cell(folder, [r for r in rows if _value(r, x_param) == x and _value(r, y_param) == y])
             for x in columns for y in lines}
    thumbs = [c for c, _ in cells.values() if isinstance(c, Image.Image)]
    score_h = LINE * min(MAX_SCORE_LINES, max([len(row.metrics) for _, row in cells.values() if row] or [0]))
    cell_w = max([MIN_CELL, *(t.width for t in thumbs)])
    cell_h = max([MIN_CELL, *(t.height for t in thumbs)]) + score_h  # a line per score under the image
    return _Layout(cells, cell_w, cell_h, score_h)


def _pages(layout: _Layout, columns: List[Any], lines: List[Any]) -> List[Tuple[List[Any], List[Any]]]:
    """The columns and lines of each page, so that no side of a page passes MAX_SIDE pixels."""
    per_row = max(1, (MAX_SIDE - LEFT_W - GAP) // (layout.cell_w + GAP))
    per_column = max(1, (MAX_SIDE - TITLE_H - TOP_H - GAP) // (layout.cell_h + GAP))
    return [(columns[i:i + per_row], lines[j:j + per_column])
            for j in range(0, len(lines), per_column) for i in range(0, len(columns), per_row)]


def _draw_sheet(layout: _Layout, x_axis: Axis, y_axis: Axis, title: str,
                prompt_texts: Dict[str, str]) -> Image.Image:
    (x_param, columns), (y_param, lines) = x_axis, y_axis
    cell_w, cell_h, score_h = layout.cell_w, layout.cell_h, layout.score_h
    sheet = Image.new("RGB", (LEFT_W + len(columns) * (cell_w + GAP) + GAP,
                              TITLE_H + TOP_H + len(lines) * (cell_h + GAP) + GAP), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=FONT_SIZE)
    _write(draw, font, title, (GAP, GAP, sheet.width - GAP, TITLE_H), centered=False)
    for i, x in enumerate(columns):
        left = LEFT_W + GAP + i * (cell_w + GAP)
        _write(draw, font, _label(x_param, x, prompt_texts), (left, TITLE_H, left + cell_w, TITLE_H + TOP_H))
        for j, y in enumerate(lines):
            top = TITLE_H + TOP_H + j * (cell_h + GAP)
            if i == 0:
                _write(draw, font, _label(y_param, y, prompt_texts), (GAP, top, LEFT_W - GAP, top + cell_h))
            content, shown = layout.cells[(x, y)]
            image_bottom = top + cell_h - score_h
            _paste(sheet, draw, font, content, (left, top, left + cell_w, image_bottom))
            for n, text in enumerate(_scores(shown)[:MAX_SCORE_LINES] if shown is not None else []):
                _write(draw, font, text, (left, image_bottom + n * LINE, left + cell_w, image_bottom + (n + 1) * LINE))
    return sheet


def _value(row: Row, param: Optional[Param]) -> Any:
    return None if param is None else row.values[param.key]


def _cell(folder: Path, rows: List[Row]) -> Tuple[Union[Image.Image, str], Optional[Row]]:
    """The first readable image among the cell's rows and its row, else why there is none."""
    for row in rows:
        if row.file is not None:
            try:
                return thumbnails.of(folder / row.file), row
            except OSError:
                continue
    failed = [row for row in rows if row.status not in ("ok", "missing")]
    return (f"{failed[0].status} (job {failed[0].job})" if failed else "missing"), None


def _scores(row: Row) -> List[str]:
    """The image's scores, a line each, as printed under it."""
    return [f"{name} {value:.3g}" for name, value in row.metrics.items()]


def _paste(sheet: Image.Image, draw: ImageDraw.ImageDraw, font, content, box: Tuple[int, int, int, int]) -> None:
    left, top, right, bottom = box
    if isinstance(content, Image.Image):
        draw.rectangle((left, top, right - 1, bottom - 1), fill=CELL)
        sheet.paste(content, (left + (right - left - content.width) // 2, top + (bottom - top - content.height) // 2))
    else:
        draw.rectangle((left, top, right - 1, bottom - 1), fill=PLACEHOLDER)
        _write(draw, font, content, box)


def _write(draw: ImageDraw.ImageDraw, font, text: str, box: Tuple[int, int, int, int], centered: bool = True) -> None:
    """Text wrapped into `box`: centred both ways, or from its top left corner."""
    left, top, right, bottom = box
    lines = _wrap(text, font, right - left, (bottom - top) // LINE)
    first = (top + bottom - len(lines) * LINE) // 2 if centered else top
    for n, line in enumerate(lines):
        at = ((left + right) // 2 if centered else left, first + n * LINE)
        draw.text(at, line, fill=INK, font=font, anchor="ma" if centered else "la")


def _wrap(text: str, font, width: int, max_lines: int) -> List[str]:
    """Lines that fit `width` px, broken after a space or `=` where possible; … ends a cut text."""
    lines, line = [], ""
    for char in " ".join(text.split()):  # a prompt's line breaks would break the layout
        if line and font.getlength(line + char) > width:
            cut = max(line.rfind(" "), line.rfind("=")) + 1 or len(line)
            lines.append(line[:cut].rstrip())
            line = line[cut:]
            if len(lines) == max_lines:
                lines[-1] = lines[-1][:-1] + "…"
                return lines
        line += char
    return [*lines, line]


def _label(param: Optional[Param], value: Any, prompt_texts: Optional[Dict[str, str]] = None) -> str:
    """`label=value`; a prompt set's row also with its prompt (cut to the lines the label has)."""
    if param is None:
        return ""
    label = f"{param.label}={display_value(param, value)}"
    prompt = (prompt_texts or {}).get(str(value)) if param.key == PROMPT else None
    return f"{label}: {prompt}" if prompt else label


def _axes_note(x_param: Optional[Param], y_param: Optional[Param]) -> str:
    return f"(x: {x_param.label if x_param else '-'}, y: {y_param.label if y_param else '-'})"


# -- file names -------------------------------------------------------------------------------
def _sheet_file_name(pairs: List[Tuple[Param, Any]]) -> str:
    """`contact_sheet_<key>=<value>_....png`; shortened, with a hash of the whole, where it would be
    too long for a file name (255 bytes, of which the atomic write's temporary name takes ~15)."""
    body = "_".join(f"{_slug(p.label)}={_slug(display_value(p, v))}" for p, v in pairs)
    if len(body) > MAX_NAME_BODY:
        body = f"{body[:MAX_NAME_BODY - 9]}-{hashlib.sha1(body.encode('utf-8')).hexdigest()[:8]}"
    return f"{SHEET_STEM}_{body}.png"


def _slug(text: str, limit: int = 24) -> str:
    """Safe in a file name; text that had to change (a prompt, say) gets a hash to stay unique."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:limit]
    if slug == text:
        return slug
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    return f"{slug}-{digest}" if slug else digest
