"""A job folder as a tracker sees it: parameters, metrics, images and tags, read from run.json.

Torch-free, and the same for every tracker. A folder whose run.json is not final yet (a background
writer still saving its images) is not ready; a folder Hydra made whose job left no record is a
failed job.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import yaml

from runner.outputs import records
from runner.report.sweep_folder import hydra_overrides

FINAL = ("ok", "failed", "skipped")
DONE = ("ok", "skipped")  # a finished job: its run is complete
PARAM_VALUE_MAX = 6000  # MLflow's limit on a parameter's value
# Report files a sweep's parent run holds (runner.report writes them).
REPORT_PATTERNS = ("summary.csv", "cells.csv", "contact_sheet*.png", "plot_*.png", "index.html")
NOT_PARAMS = ("zoo.twins.",)  # the tiny zoo's map of weight references: where models come from, not a setting
_NAME_CHARS = re.compile(r"[^\w\-. /:]")  # what MLflow accepts in a key


@dataclass
class TrackedJob:
    folder: Path
    name: str  # the job folder's name in its sweep (Hydra's job number, `<n>-<k>` for a chunk's points)
    identity: Optional[str]  # run.json `id`: the job identity resume also keys on
    status: str  # ok | failed | skipped | missing (no run.json)
    error: Optional[str]
    params: Dict[str, str]
    metrics: Dict[str, float]  # timings and each score's mean over the job's images
    image_metrics: List[Dict[str, float]]  # per image, in image order
    images: List[Path]
    record_file: Optional[Path]
    tags: Dict[str, str] = field(default_factory=dict)
    title: str = ""  # what a run is called: folder and overrides

    @property
    def succeeded(self) -> bool:
        return self.status in DONE


def sweep_id(out_dir: Path) -> str:
    """A short stable key of an output folder, for trackers' tags and run ids."""
    return hashlib.sha256(str(Path(out_dir).resolve()).encode("utf-8")).hexdigest()[:16]


def job_folders(sweep_dir: Path) -> List[Path]:
    """The job folders of a sweep: every folder with a run.json or Hydra's .hydra/, in job order."""
    found = {p.parent for p in sweep_dir.glob(f"*/{records.RUN_JSON}")} | {p.parent for p in sweep_dir.glob("*/.hydra")}
    return sorted(found, key=_job_order)


def chunk_folders(job_dir: Path) -> List[Path]:
    """A Hydra job's folder and those of its chunk's other points (`<n>-1`, `<n>-2`, ...: runner.sweep.chunks)."""
    return [job_dir, *sorted(job_dir.parent.glob(f"{job_dir.name}-*"), key=_job_order)]


def _job_order(path: Path) -> Tuple:
    parts = path.name.split("-")
    return (not all(p.isdigit() for p in parts), [int(p) if p.isdigit() else 0 for p in parts], path.name)


def read_job(folder: Path, out_dir: Path, experiment: Optional[str]) -> Optional[TrackedJob]:
    """The job in `folder`, or None while its run.json is not final (its images are still being written)."""
    record_file = folder / records.RUN_JSON
    try:
        record = records.read_json(record_file)
    except FileNotFoundError:
        record, record_file = {}, None
    except (OSError, ValueError):
        return None
    status = record.get("status", "missing")
    if record and status not in FINAL:
        return None
    overrides = [str(o) for o in record.get("overrides") or hydra_overrides(folder)]
    config = dict(flatten(record.get("config") or {}))
    params = {_name(key, "_"): _text(value) for key, value in config.items() if not key.startswith(NOT_PARAMS)}
    for text in overrides:  # a config group's choice (scheduler=tcd) is no config leaf: keep it as typed
        key, sep, value = text.partition("=")
        key = _name(key.lstrip("+~"), "_")
        if sep and key not in params:
            params[key] = _text(value)
    images = [image for image in record.get("images") or [] if (folder / image["file"]).is_file()]
    image_metrics = [dict(image.get("metrics") or {}) for image in images]
    metrics = {f"time/{key}": float(value) for key, value in (record.get("timings") or {}).items()
               if isinstance(value, (int, float))}
    for name in dict.fromkeys(name for scores in image_metrics for name in scores):
        values = [scores[name] for scores in image_metrics if isinstance(scores.get(name), (int, float))]
        if values:
            metrics[_name(name)] = sum(values) / len(values)
    error = record.get("error") or (None if record else "no run.json: the job stopped before recording itself "
                                    "(its lcm-run.log may say why)")
    job = TrackedJob(folder=folder, name=folder.name, identity=record.get("id"), status=status, error=error,
                     params=params, metrics=metrics, image_metrics=image_metrics,
                     images=[folder / image["file"] for image in images], record_file=record_file)
    job.tags = {"lcm.kind": "job", "lcm.job": job.name, "lcm.job_id": job.identity or "", "lcm.status": status,
                "lcm.sweep": str(out_dir), "lcm.sweep_id": sweep_id(out_dir),
                "lcm.experiment": _experiment(overrides, experiment)}
    if error:
        job.tags["lcm.error"] = error[:5000]
    chosen = [o for o in overrides if not o.startswith(("hydra.", "tracker"))]  # where it is logged: not what it is
    job.title = f"{job.name}: {' '.join(chosen)}" if chosen else job.name
    return job


def experiment_choice(out_dir: Path) -> Optional[str]:
    """The `experiment=` choice a sweep (its multirun.yaml) or a single run (.hydra/hydra.yaml) was made with."""
    for path in (out_dir / "multirun.yaml", out_dir / ".hydra" / "hydra.yaml"):
        try:
            saved = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except (OSError, yaml.YAMLError):
            continue
        node = saved.get("hydra", saved) if isinstance(saved, dict) else {}
        return ((node.get("runtime") or {}).get("choices") or {}).get("experiment")
    return None


def report_files(sweep_dir: Path) -> List[Path]:
    return [path for pattern in REPORT_PATTERNS for path in sorted(sweep_dir.glob(pattern))]


def flatten(node: Dict[str, Any], prefix: str = "") -> Iterator[Tuple[str, Any]]:
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _experiment(overrides: List[str], chosen: Optional[str]) -> str:
    swept = [o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")]
    return (swept[0] if swept else chosen) or "none"


def _name(key: str, slash: str = "/") -> str:
    """A key as trackers take it (MLflow: no odd characters, and no `/` in a parameter's name, which
    it would read as a path); at most 250 characters."""
    return _NAME_CHARS.sub("_", str(key)).replace("/", slash)[:250]


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text[:PARAM_VALUE_MAX]
