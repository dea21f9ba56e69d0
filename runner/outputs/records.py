"""What a job leaves on disk: images and run.json, written atomically.

A file appears under its final name only once it is complete (temporary name, then rename), so
an interrupted job never looks finished. Nothing already in a job folder is overwritten.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from runner.errors import UserError
from runner.outputs import image_files

RUN_JSON = "run.json"
_UMASK = os.umask(0)
os.umask(_UMASK)
_VERSIONED = ("lcm-runner", "torch", "diffusers", "transformers", "peft", "accelerate",
              "hydra-core", "omegaconf", "huggingface-hub", "safetensors", "pillow")


def image_name(index: int, seed: int) -> str:
    """A PNG image's file name (outputs.format's default; runner.outputs.image_files names the others)."""
    return image_files.file_name(index, seed, image_files.ImageFormat())


def previous_job(job_dir: Path, identity: str) -> str:
    """What a job folder already holds for the job `identity`: "none", "complete" (skip it) or
    "partial" (ours but unfinished or failed: redo it). Another job's results are never touched."""
    record = _read_record(job_dir)
    outputs = _job_outputs(job_dir)
    if record is None and not outputs:
        return "none"
    if record is None and all(path.name.endswith(".tmp") for path in outputs):
        return "partial"  # only our own unfinished writes (a kill mid-write): nothing anyone finished
    found = record.get("id") if record else _identity_in_image(outputs)
    if found not in (identity, None) or (found is None and record is None):
        raise UserError(
            f"{job_dir} already holds the results of another job (job id {found or 'unknown'}, this one "
            f"is {identity}). They are kept: choose another folder with hydra.run.dir=... (or "
            "hydra.sweep.dir=... for a sweep), or move the old results away first."
        )
    complete = record is not None and record.get("status") in ("ok", "skipped") and all(
        (job_dir / image["file"]).is_file() for image in record.get("images", []))
    return "complete" if complete else "partial"


def clear_partial(job_dir: Path) -> None:
    """Remove what an unfinished attempt of this same job left (images, inputs, run.json)."""
    for path in previous_job_outputs(job_dir):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def previous_job_outputs(job_dir: Path) -> list:
    """Everything a job writes in its folder that is there now (run.json included)."""
    return _job_outputs(job_dir) + ([job_dir / RUN_JSON] if (job_dir / RUN_JSON).exists() else [])


def _job_outputs(job_dir: Path) -> list:
    images = [path for path in job_dir.glob("image_*") if image_files.is_image_file(path.name)]
    return sorted(images) + sorted(job_dir.glob(".*.tmp")) + (
        [job_dir / "inputs"] if (job_dir / "inputs").exists() else [])


def _read_record(job_dir: Path) -> Optional[Dict[str, Any]]:
    try:
        return read_json(job_dir / RUN_JSON)
    except FileNotFoundError:
        return None
    except ValueError:
        return {}  # unreadable: an interrupted write of ours; the temp-then-rename makes it rare


def _identity_in_image(paths) -> Optional[str]:
    """The job id recorded in the first of our images (any format) that has one."""
    from runner.outputs.png_metadata import RECORD_KEY, read_image_metadata

    for path in paths:
        if image_files.is_image_file(path.name):
            try:
                return (read_image_metadata(path)[RECORD_KEY] or {}).get("id")
            except UserError:
                continue
    return None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda handle: handle.write(data))


def write_json(path: Path, record: Dict[str, Any]) -> None:
    text = json.dumps(record, indent=2, default=_jsonable, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def save_png(path: Path, image: Any, pnginfo: Any = None) -> None:
    _atomic(path, lambda handle: image.save(handle, format="PNG", pnginfo=pnginfo))


def save_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda handle: handle.write(data))


def read_json(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=None)
def _installed_versions() -> tuple:
    """Read once per process: importlib.metadata scans site-packages on every call."""
    found = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return tuple(found.items())


def versions() -> Dict[str, str]:
    return dict(_installed_versions())


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays in scheduler configs
        return value.tolist()
    return str(value)


def remove_all(paths: Iterable[Path]) -> None:
    for path in paths:
        Path(path).unlink(missing_ok=True)
