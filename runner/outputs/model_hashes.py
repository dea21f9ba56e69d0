"""The hashes AUTOMATIC1111 writes into its `parameters` text, by which image browsers and model
sites recognise a model: `Model hash` and `VAE hash` (the file's sha256, first 10 hex digits) and
`Lora hashes` (the AddNet hash: the sha256 of a safetensors file's bytes after its header, first 12
hex digits). A file is read once: its hashes are kept by path, size and modification time, in the
process and in `<cache>/lcm-runner/model_hashes.json`, so that a multi-GB checkpoint is hashed once
per machine, not once per job."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Dict, Tuple

MODEL_HASH_DIGITS = 10
LORA_HASH_DIGITS = 12
_BLOCK = 1 << 20
_MEMORY: Dict[Tuple[str, int, int], Dict[str, str]] = {}


def cache_file() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "lcm-runner" / "model_hashes.json"


def file_hashes(path: str) -> Dict[str, str]:
    """`{"sha256": …, "addnet": …}` of a file (addnet: safetensors files only), read at most once."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    if key not in _MEMORY:
        _MEMORY[key] = _stored(key) or _store(key, _compute(resolved))
    return _MEMORY[key]


def model_hash(path: str) -> str:
    return file_hashes(path)["sha256"][:MODEL_HASH_DIGITS]


def lora_hash(path: str) -> str:
    hashes = file_hashes(path)
    return hashes.get("addnet", hashes["sha256"])[:LORA_HASH_DIGITS]


def _compute(path: Path) -> Dict[str, str]:
    whole, after_header = hashlib.sha256(), hashlib.sha256()
    with open(path, "rb") as handle:
        start = handle.read(8)
        whole.update(start)
        header = struct.unpack("<Q", start)[0] if len(start) == 8 else -1
        is_safetensors = path.suffix == ".safetensors" and 0 < header <= path.stat().st_size - 8
        position = 8
        for block in iter(lambda: handle.read(_BLOCK), b""):
            whole.update(block)
            if is_safetensors:  # A1111's addnet_hash_safetensors: what follows the 8 + n header bytes
                skip = max(0, 8 + header - position)
                after_header.update(block[skip:])
            position += len(block)
    hashes = {"sha256": whole.hexdigest()}
    if is_safetensors:
        hashes["addnet"] = after_header.hexdigest()
    return hashes


def _stored(key: Tuple[str, int, int]) -> Dict[str, str]:
    try:
        return json.loads(cache_file().read_text()).get(_text(key)) or {}
    except (OSError, ValueError, AttributeError):
        return {}


def _store(key: Tuple[str, int, int], hashes: Dict[str, str]) -> Dict[str, str]:
    """Add to the cache file under a lock, written whole (a reader never sees half of it)."""
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            kept: dict = {}
            with contextlib.suppress(OSError, ValueError):
                read = json.loads(path.read_text())
                kept = read if isinstance(read, dict) else kept
            kept[_text(key)] = hashes
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".model_hashes.")
            with os.fdopen(handle, "w") as out:
                json.dump(kept, out, indent=1, sort_keys=True)
            os.replace(temporary, path)
    except OSError:  # a read-only cache folder costs a re-hash next time, nothing else
        pass
    return hashes


def _text(key: Tuple[str, int, int]) -> str:
    return f"{key[0]}|{key[1]}|{key[2]}"


def job_hashes(record: dict) -> dict:
    """The A1111 hashes of what a job loaded, from its record: `model` and `vae` where they are
    single files (A1111 hashes files; a diffusers folder has no such hash), `lora` by adapter name."""
    hashes: dict = {}
    for role in ("base", "vae"):
        path = (record.get("components") or {}).get(role)
        if path and Path(path).is_file():
            hashes["model" if role == "base" else "vae"] = model_hash(path)
    loras = {a["name"]: lora_hash(a["file"]) for a in record.get("adapters") or [] if Path(a["file"]).is_file()}
    if loras:
        hashes["lora"] = loras
    return hashes
