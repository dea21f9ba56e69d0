"""What a job leaves on disk: PNGs and run.json, written atomically.

A file appears under its final name only once it is complete (temporary name, then rename), so
an interrupted job never looks finished. Nothing already in a job folder is overwritten.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterable

from runner.errors import UserError

RUN_JSON = "run.json"
_UMASK = os.umask(0)
os.umask(_UMASK)
_VERSIONED = ("lcm-runner", "torch", "diffusers", "transformers", "peft", "accelerate",
              "hydra-core", "omegaconf", "huggingface-hub", "safetensors", "pillow")


def image_name(index: int, seed: int) -> str:
    return f"image_{index:02d}_seed{seed}.png"


def ensure_fresh(job_dir: Path) -> None:
    """Refuse to run into a folder that already holds a job's results."""
    if (job_dir / RUN_JSON).exists() or any(job_dir.glob("image_*.png")):
        raise UserError(
            f"{job_dir} already holds the results of a run (run.json or images). They are kept: "
            "choose another folder with hydra.run.dir=... (or hydra.sweep.dir=... for a sweep), "
            "or move the old results away first."
        )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda handle: handle.write(data))


def write_json(path: Path, record: Dict[str, Any]) -> None:
    text = json.dumps(record, indent=2, default=_jsonable, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def save_png(path: Path, image: Any, pnginfo: Any = None) -> None:
    _atomic(path, lambda handle: image.save(handle, format="PNG", pnginfo=pnginfo))


def read_json(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def versions() -> Dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


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
