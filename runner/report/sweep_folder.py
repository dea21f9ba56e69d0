"""Read a finished (or interrupted) sweep from disk and write its summary.csv.

Torch-free: only run.json files are read. `load_sweep` is the one reader behind the summary, the
contact sheets and the gallery: it infers which parameters the sweep varied and lists one row per
image (or per job that left no image), whatever state each job folder is in.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import yaml

from runner.errors import UserError
from runner.outputs import records

SEED = "sampling.seed"
PROMPT = "prompt"  # a prompt set's row id, the sweep axis of its rows
CATEGORY = "category"  # a row's category: groups the rows, a contact sheet each
# Values that differ from job to job without being parameters of the sweep.
NOT_PARAMETERS = ("paths.output_dir",)
# Config keys whose label reads better short.
LABELS = {"scheduler._target_": "scheduler", SEED: "seed"}
# A Hydra override's key may carry these prefixes (+add, ++force add, ~delete).
OVERRIDE_PREFIXES = "+~"


@dataclass(frozen=True)
class Param:
    """One swept parameter: a dotted config key, or a config group chosen on the command line."""

    key: str  # `sampling.steps`, `lora.papercut.weight`, or a group such as `scheduler`
    label: str  # what people read and may type: `seed` for sampling.seed, `scheduler` for its target


@dataclass(frozen=True)
class Row:
    """One image, or one job that left no image (failed, skipped, killed)."""

    job: str  # the job folder's name: Hydra's job number
    values: Dict[str, Any]  # Param.key -> value ({} if unknown); for sampling.seed, this image's seed
    seed: Optional[int]
    file: Optional[str]  # relative to the sweep folder, with forward slashes
    status: str  # ok | failed | skipped | missing (no run.json)
    time: Optional[float]  # the job's timings.total
    error: Optional[str]
    prompt_id: Optional[str] = None  # the prompt set's row (run.json images[i].prompt_id)
    category: Optional[str] = None  # that row's category
    metrics: Dict[str, float] = field(default_factory=dict)  # run.json images[i].metrics


@dataclass(frozen=True)
class Sweep:
    folder: Path
    params: List[Param]
    rows: List[Row]
    shared: Dict[str, Any]  # config leaves every job that recorded its config agrees on
    prompt_texts: Dict[str, str] = field(default_factory=dict)  # prompt set row id -> its prompt

    @property
    def metrics(self) -> List[str]:
        """The metric names the images carry, in the order they first appear."""
        return list(dict.fromkeys(name for row in self.rows for name in row.metrics))

    def param(self, name: str) -> Param:
        """The swept parameter called `name` (its key or its label)."""
        for param in self.params:
            if name in (param.key, param.label):
                return param
        valid = ", ".join(p.label if p.label == p.key else f"{p.label} ({p.key})" for p in self.params)
        valid = valid or "none: nothing varies across the jobs"
        raise UserError(f"{name!r} is not a swept parameter of {self.folder}; the swept parameters are: {valid}")


@dataclass(frozen=True)
class _Job:
    name: str
    record: Dict[str, Any]  # {} when the job left no run.json
    overrides: Dict[str, str]  # key (prefixes stripped) -> value text, in command-line order
    config: Dict[str, Any]  # flattened: dotted key -> leaf value; {} for a job rejected early


def load_sweep(sweep_dir: Union[str, Path]) -> Sweep:
    folder = Path(sweep_dir).resolve()
    jobs = [_read_job(path) for path in _job_folders(folder)]
    if not any(job.record for job in jobs):
        raise UserError(_not_a_sweep(folder))
    params = _swept_params(jobs)
    categories = {image.get("category") for job in jobs for image in job.record.get("images") or []}
    if len(categories - {None}) > 1 and any(p.key == PROMPT for p in params):
        params.append(Param(CATEGORY, CATEGORY))  # off the axes: a sheet per category
    rows = [row for job in jobs for row in _rows(job, params)]
    texts = {str(job.config[PROMPT]): job.config["sampling.prompt"] for job in jobs
             if job.config.get(PROMPT) is not None and "sampling.prompt" in job.config}
    return Sweep(folder, params, rows, _shared_config(jobs), texts)


def display_value(param: Param, value: Any) -> str:
    """A value as a label shows it: `LCMScheduler` rather than diffusers.LCMScheduler.from_config.

    Whole floats drop their `.0`, so that 0.0 from a config and 0 from an override read the same.
    """
    if param.key == "scheduler._target_" and isinstance(value, str):
        return value.rsplit(".from_config", 1)[0].rsplit(".", 1)[-1]
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def ordered_values(values: Iterable[Any]) -> List[Any]:
    """The distinct values: numbers in numeric order (None last), others in job order (as typed)."""
    distinct = list(dict.fromkeys(values))
    known = [value for value in distinct if value is not None]
    if all(isinstance(value, (int, float)) for value in known):
        return sorted(known) + [None] * (len(known) < len(distinct))
    return distinct


# -- reading job folders ----------------------------------------------------------------------
def _job_folders(folder: Path) -> List[Path]:
    """Hydra's numbered job folders, plus any other folder holding a run.json, in job order."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir()
             if p.is_dir() and (p.name.isdigit() or (p / records.RUN_JSON).is_file())]
    return sorted(found, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def _not_a_sweep(folder: Path) -> str:
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if (folder / records.RUN_JSON).is_file():
        return f"{folder} is a single run's folder, not a sweep: give the folder that holds the job folders"
    return (f"{folder} is not a sweep folder: no job folder in it holds a {records.RUN_JSON} "
            f"(expected {folder / '0' / records.RUN_JSON}, ...)")


def _read_job(folder: Path) -> _Job:
    try:
        record = records.read_json(folder / records.RUN_JSON)
    except (OSError, ValueError):
        record = {}  # killed before it wrote its record, or a record cut short
    overrides = record.get("overrides")
    if overrides is None:
        overrides = hydra_overrides(folder)
    return _Job(folder.name, record, _parse_overrides(overrides), dict(_flatten(record.get("config") or {})))


def hydra_overrides(folder: Path) -> List[str]:
    """The overrides Hydra saved beside a job that never wrote run.json."""
    try:
        saved = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    return [str(item) for item in saved] if isinstance(saved, list) else []


def _parse_overrides(overrides: List[str]) -> Dict[str, str]:
    parsed = {}
    for text in overrides:
        key, sep, value = str(text).partition("=")
        if sep:
            parsed[key.lstrip(OVERRIDE_PREFIXES)] = value
    return parsed


def _flatten(node: Dict[str, Any], prefix: str = "") -> Iterator[Tuple[str, Any]]:
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _flatten(value, dotted + ".")
        else:
            yield dotted, value


# -- which parameters the sweep varied --------------------------------------------------------
def _swept_params(jobs: List[_Job]) -> List[Param]:
    """Config keys that differ across jobs, in command-line order, then the rest sorted.

    Keys under a config group chosen on the command line (`scheduler=lcm,dpmpp_2m` changes
    `_target_`, `algorithm_type`, ...) fold into one parameter named after the group. So do keys
    that a swept choice of a group sets elsewhere (`experiment=t2i,inpaint` sets prompts, steps,
    conditioning ... through `# @package _global_`): keys that no override names and whose value
    the choice decides, job by job.
    """
    override_order = list(dict.fromkeys(key for job in jobs for key in job.overrides))
    values = _config_values(jobs)
    differing = [key for key, seen in values.items() if len(seen) > 1 and key != SEED]
    if len({seed for job in jobs for seed in _image_seeds(job)} - {None}) > 1:
        differing.append(SEED)
    choices = [key for key in override_order if (key not in values or _chooses_prompts(key))
               and len({job.overrides.get(key) for job in jobs}) > 1]  # swept config-group choices
    params = {}
    for key in differing:
        owner = _owning_override(key, override_order)
        if owner is None or len({job.overrides.get(owner) for job in jobs}) == 1:  # set alike, decided elsewhere
            owner = _deciding_choice(jobs, key, choices) or owner
        if owner not in (None, key):
            params.setdefault(owner, Param(owner, owner))
        else:
            params.setdefault(key, Param(key, LABELS.get(key, key)))
    position = {key: index for index, key in enumerate(override_order)}
    return sorted(params.values(), key=lambda p: (p.key not in position, position.get(p.key, 0), p.key))


def _chooses_prompts(key: str) -> bool:
    """A prompt set's row (`prompt`) or a template variable (`vars.NAME`): the prompt texts it
    decides fold into it, so that an axis shows the row id or the variable's value."""
    return key == "prompt" or key.startswith("vars.")


def _deciding_choice(jobs: List[_Job], key: str, choices: List[str]) -> Optional[str]:
    """The first swept group choice that decides `key`'s value in every job that recorded a config."""
    configured = [job for job in jobs if job.config]
    return next((choice for choice in choices if _decides(configured, choice, key)), None)


def _decides(jobs: List[_Job], choice: str, key: str) -> bool:
    """Whether jobs that made the same choice all have the same value of `key`."""
    seen: Dict[Optional[str], Any] = {}
    for job in jobs:
        value = _job_value(job, key)
        if seen.setdefault(job.overrides.get(choice), value) != value:
            return False
    return True


def _shared_config(jobs: List[_Job]) -> Dict[str, Any]:
    configured = [job for job in jobs if job.config]
    return {key: configured[0].config[key] for key, seen in _config_values(jobs).items()
            if len(seen) == 1 and all(key in job.config for job in configured)}


def _config_values(jobs: List[_Job]) -> Dict[str, set]:
    """Every config key the jobs recorded (sorted) -> the distinct values it took (None: absent)."""
    configured = [job for job in jobs if job.config]
    keys = sorted({key for job in configured for key in job.config} - set(NOT_PARAMETERS))
    return {key: {_comparable(job.config.get(key)) for job in configured} for key in keys}


def _owning_override(key: str, override_keys: List[str]) -> Optional[str]:
    """The override that sets `key`: the key itself, or the longest config group above it."""
    owners = [o for o in override_keys if key == o or key.startswith(o + ".")]
    return max(owners, key=len) if owners else None


def _comparable(value: Any) -> Any:
    """Hashable, so that values can be told apart and grouped (lists and dicts by their text)."""
    return repr(value) if isinstance(value, (list, dict)) else value


def _image_seeds(job: _Job) -> List[Optional[int]]:
    seeds = [image.get("seed") for image in job.record.get("images") or []]
    return seeds or [_job_value(job, SEED)]


def _job_value(job: _Job, key: str) -> Any:
    """A job's value for a parameter: from its config, else from the override that set it."""
    if key in job.config:
        return _comparable(job.config[key])
    text = job.overrides.get(key)
    return None if text is None else _scalar(text)


def _scalar(text: str) -> Any:
    """An override's value as the config would hold it: a number, a word, a group's choice."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, bool, str)) or value is None else text


# -- rows -------------------------------------------------------------------------------------
def _rows(job: _Job, params: List[Param]) -> Iterator[Row]:
    known = job.config or job.overrides  # else the job cannot be placed: its values stay unknown
    values = {p.key: _job_value(job, p.key) for p in params} if known else {}
    status = job.record.get("status", "missing")
    time = (job.record.get("timings") or {}).get("total")
    error = job.record.get("error")
    images = job.record.get("images") or []
    prompt_id = job.config.get(PROMPT)
    for image in images:
        seeded = {**values, SEED: image.get("seed")} if SEED in values else values
        if any(p.key == CATEGORY for p in params):
            seeded = {**seeded, CATEGORY: image.get("category")}
        yield Row(job.name, seeded, image.get("seed"), f"{job.name}/{image['file']}", status, time, error,
                  image.get("prompt_id"), image.get("category"), dict(image.get("metrics") or {}))
    if not images:
        yield Row(job.name, values, _job_value(job, SEED), None, status, time, error,
                  None if prompt_id is None else str(prompt_id))
