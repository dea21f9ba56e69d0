"""Contact-sheet thumbnails, made while a sweep's images are still in memory.

The end-of-sweep report draws one thumbnail per cell. Reading a 1024² PNG back and shrinking it
took ~30 ms here, at the end of the sweep, while the user waits. The writer threads make the
thumbnail as they save the image (~6 ms, beside the next job's denoising), and the report takes it
if the file on disk is still the one it came from (same inode, size and modification time). The
pixels are the same either way: the thumbnail is made the same way, from the image as its file
decodes (a WebP or JPEG is decoded from the bytes written first). Torch-free.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Tuple

from PIL import Image

THUMB = 256  # a thumbnail's longest side, in px
MAX_KEPT_BYTES = 256 * 2**20  # beyond this the oldest are dropped and read back from disk

_kept: "OrderedDict[str, Tuple[Tuple[int, int, int], Image.Image]]" = OrderedDict()
_kept_bytes = 0
_lock = threading.Lock()


def make(image: Image.Image) -> Image.Image:
    thumb = image.convert("RGB")  # a copy, even of an RGB image
    thumb.thumbnail((THUMB, THUMB))
    return thumb


def keep(path: Path, image: Image.Image) -> None:
    """Remember the thumbnail of `image`, just written to `path`."""
    global _kept_bytes
    thumb, key = make(image), str(Path(path).resolve())
    with _lock:
        _drop(key)
        _kept[key] = (_signature(path), thumb)
        _kept_bytes += _size(thumb)
        while _kept_bytes > MAX_KEPT_BYTES and _kept:
            _drop(next(iter(_kept)))


def of(path: Path) -> Image.Image:
    """The thumbnail of the image file at `path`: the one kept when it was written, if the file is
    unchanged since, else read from disk. OSError if the file cannot be read as an image."""
    with _lock:
        kept = _kept.get(str(Path(path).resolve()))
    if kept is not None and kept[0] == _signature(path):
        return kept[1]
    with Image.open(path) as image:
        return make(image)


def forget() -> None:
    global _kept_bytes
    with _lock:
        _kept.clear()
        _kept_bytes = 0


def _drop(key: str) -> None:
    global _kept_bytes
    dropped = _kept.pop(key, None)
    if dropped is not None:
        _kept_bytes -= _size(dropped[1])


def _size(image: Image.Image) -> int:
    return image.width * image.height * len(image.getbands())


def _signature(path: Any) -> Tuple[int, int, int]:
    stat = os.stat(path)
    return stat.st_ino, stat.st_size, stat.st_mtime_ns
