"""Prompt sets: many prompts, each a value of the sweep axis `prompt`.

A set is a file (`prompts=file prompts.path=...`) or the built-in one (`prompts=builtin`):
- `.txt`: one prompt a line (blank lines and lines starting with `#` skipped);
- `.csv` / `.tsv`: a `prompt` column (any case; PartiPrompts' `Prompt` / `Category` read as
  published), optional `id`, `category`, `negative_prompt`;
- `.jsonl`: one object a line with the same keys.
A row's id is its `id` value, else its 1-based line (text, JSON lines) or row number (tables): stable
under `prompts.limit` (the first N rows) and `prompts.sample` (N rows drawn with `prompts.seed`, kept
in file order). Rows are taken literally: `${...}` in a row is text, not an interpolation. Torch-free.
"""
from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from omegaconf import OmegaConf

from runner.errors import UserError

BUILTIN = Path(__file__).with_name("builtin_prompts.tsv")
KINDS = ("none", "file", "builtin")
FORMATS = (".txt", ".csv", ".tsv", ".jsonl")
COLUMNS = ("id", "prompt", "category", "negative_prompt")


@dataclass(frozen=True)
class PromptRow:
    id: str
    prompt: str
    category: Optional[str] = None
    negative_prompt: Optional[str] = None


# (path, size, mtime, limit, sample, seed) -> the rows chosen, by id. A job's prompt is resolved
# each time its config is read: the file is read and the rows chosen once per sweep.
_chosen: Dict[Tuple, Dict[str, PromptRow]] = {}


def prompt_rows(kind: str, path: Optional[str], limit: Optional[int] = None, sample: Optional[int] = None,
                seed: int = 0) -> List[PromptRow]:
    """The rows of the set that `prompts.*` describe, after limit and sample."""
    return list(_chosen_rows(kind, path, limit, sample, seed).values())


def _chosen_rows(kind: str, path: Optional[str], limit: Optional[int], sample: Optional[int],
                 seed: int) -> Dict[str, PromptRow]:
    if kind not in KINDS or kind == "none":
        raise UserError(f"prompts.kind={kind!r} is not a prompt set: choose prompts=file (with prompts.path) "
                        "or prompts=builtin.")
    file = BUILTIN if kind == "builtin" else _checked_path(path)
    stat = file.stat()
    key = (str(file), stat.st_size, stat.st_mtime_ns, limit, sample, seed)
    if key not in _chosen:
        _chosen[key] = {row.id: row for row in _choose(_rows_of(file), limit, sample, seed)}
    return _chosen[key]


def _choose(rows: List[PromptRow], limit: Optional[int], sample: Optional[int], seed: int) -> List[PromptRow]:
    if limit is not None:
        if limit < 1:
            raise UserError(f"prompts.limit={limit} must be at least 1 (or null for every row).")
        rows = rows[:limit]
    if sample is not None:
        if sample < 1:
            raise UserError(f"prompts.sample={sample} must be at least 1 (or null for every row).")
        chosen = sorted(random.Random(seed).sample(range(len(rows)), min(sample, len(rows))))
        rows = [rows[index] for index in chosen]
    return rows


def row_of_config(cfg) -> PromptRow:
    """The row `cfg.prompt` names in the set `cfg.prompts` describes."""
    p = cfg.prompts
    rows = _chosen_rows(str(p.kind), p.path, p.limit, p.sample, int(p.seed))
    prompt_id = str(cfg.prompt)
    if prompt_id in rows:
        return rows[prompt_id]
    shown = ", ".join(list(rows)[:8]) + (", ..." if len(rows) > 8 else "")
    raise UserError(f"prompt={prompt_id!r} is not a row id of the prompt set (ids: {shown}). Leave `prompt` "
                    "out of the command line: lcm-run sweeps every row of the set.")


def rows_of_config(cfg) -> List[PromptRow]:
    """The rows `cfg.prompts` selects."""
    p = cfg.prompts
    return prompt_rows(str(p.kind), p.path, p.limit, p.sample, int(p.seed))


def _prompt_row(field: str, *, _root_) -> Optional[str]:
    """${prompt_row:prompt} / ${prompt_row:negative_prompt}: the chosen row's text (taken literally)."""
    if _root_.get("prompt") is None:
        raise UserError(f"prompts={_root_.prompts.kind} sweeps one job per prompt of the set: add -m (lcm-run -m "
                        f"prompts={_root_.prompts.kind} ...), or pick one row with prompt=ID.")
    row = row_of_config(_root_)
    if field == "negative_prompt":
        return row.negative_prompt if row.negative_prompt is not None else _root_.prompts.negative_prompt
    return row.prompt


OmegaConf.register_new_resolver("prompt_row", _prompt_row, replace=True)


def _checked_path(path: Optional[str]) -> Path:
    if not path:
        raise UserError("prompts=file needs prompts.path: the prompt file (.txt, .csv, .tsv or .jsonl), "
                        "for example prompts.path=prompts.tsv.")
    file = Path(str(path)).expanduser()
    if file.suffix.lower() not in FORMATS:
        raise UserError(f"prompts.path={path!r} is not a prompt file lcm-run reads: give a "
                        f"{', '.join(FORMATS)} file.")
    if not file.is_file():
        raise UserError(f"prompts.path={path!r} does not exist or is not a file. Give the path of a prompt "
                        "file (relative paths are read from the folder lcm-run starts in).")
    return file.resolve()


def _rows_of(file: Path) -> List[PromptRow]:
    """Every row of the file, checked."""
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"prompts.path={str(file)!r} cannot be read as UTF-8 text ({error}).") from None
    rows = _parse(file, text)
    if not rows:
        raise UserError(f"{file} holds no prompt: add prompts to it (one a line in a .txt file, a `prompt` "
                        "column in a table, a `prompt` key per JSON line).")
    _check_unique(file, rows)
    return [row for _, row in rows]


def _parse(file: Path, text: str) -> List[Tuple[int, PromptRow]]:
    suffix = file.suffix.lower()
    if suffix == ".txt":
        return [(number, _row(file, number, {"prompt": line}))
                for number, line in enumerate(text.splitlines(), 1) if line.strip() and not line.lstrip().startswith("#")]
    if suffix == ".jsonl":
        return [(number, _row(file, number, _json_object(file, number, line)))
                for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    return _table(file, text, "\t" if suffix == ".tsv" else ",")


def _table(file: Path, text: str, delimiter: str) -> List[Tuple[int, PromptRow]]:
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = next(reader, None)
    names = [name.strip().lower() for name in header or []]
    if "prompt" not in names:
        raise UserError(f"{file}, line 1: no `prompt` column (the header has {', '.join(header or []) or 'nothing'}). "
                        "Name the column of prompts `prompt` (any case).")
    rows = []
    for number, values in enumerate(reader, 1):
        if not any(value.strip() for value in values):
            continue
        if len(values) > len(names):
            raise UserError(f"{file}, line {reader.line_num}: {len(values)} fields where the header has "
                            f"{len(names)}. Quote fields that hold the delimiter.")
        fields = {name: value for name, value in zip(names, values) if name in COLUMNS}
        rows.append((number, _row(file, number, fields, line=reader.line_num)))
    return rows


def _json_object(file: Path, number: int, line: str) -> dict:
    try:
        data = json.loads(line)
    except ValueError as error:
        raise UserError(f"{file}, line {number}: not valid JSON ({error}).") from None
    if not isinstance(data, dict):
        raise UserError(f"{file}, line {number}: each line must be a JSON object with a `prompt` key.")
    return {str(key).lower(): value for key, value in data.items()}


def _row(file: Path, number: int, fields: dict, line: Optional[int] = None) -> PromptRow:
    where = f"{file}, line {line or number}"
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError(f"{where}: the prompt is missing or empty. Give every row a prompt, or remove the row.")
    row_id = fields.get("id")
    row_id = str(number) if row_id is None or str(row_id).strip() == "" else str(row_id).strip()
    optional = {key: (str(fields[key]) if fields.get(key) not in (None, "") else None)
                for key in ("category", "negative_prompt")}
    return PromptRow(row_id, prompt.strip(), **optional)


def _check_unique(file: Path, rows: List[Tuple[int, PromptRow]]) -> None:
    seen: Dict[str, int] = {}
    for number, row in rows:
        if row.id in seen:
            raise UserError(f"{file}: rows {seen[row.id]} and {number} have the same id {row.id!r}. Give every "
                            "row its own id (or leave the id column out: rows are then numbered).")
        seen[row.id] = number
