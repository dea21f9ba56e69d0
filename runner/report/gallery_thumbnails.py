"""The gallery's thumbnail files, written once at a sweep's end.

A page of the gallery shows up to a hundred images; at 1024² that would be ~150 MB for the browser to
fetch and decode. Each image of thumbnails.THUMB px or more on a side gets a JPEG thumbnail under
`thumbnails/<job>/`, made from the thumbnail the writer kept in memory (the one the contact sheets
use), so the images are not read back. A thumbnail newer than its image is left as it is: a rebuild
(`lcm-grid`) writes only what changed, without opening the images. Images smaller than a thumbnail,
and the thumbnails `outputs.keep=thumbnails` keeps in place of the images, are shown as they are.
Torch-free.
"""
from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Optional

from runner.outputs import image_files, records, thumbnails
from runner.report.sweep_folder import Sweep

FOLDER = "thumbnails"  # under the sweep folder: thumbnails/<job>/<image stem>.jpg
QUALITY = 85


def write_gallery_thumbnails(sweep: Sweep) -> Dict[str, str]:
    """{image file: what the gallery shows for it}, both relative to the sweep folder."""
    files = [row.file for row in sweep.rows if row.file is not None]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # Pillow releases the GIL
        shown = list(pool.map(lambda file: _thumbnail(sweep.folder, file), files))
    return {file: thumb or file for file, thumb in zip(files, shown)}


def _thumbnail(folder: Path, file: str) -> Optional[str]:
    """The thumbnail's path relative to `folder`, or None where the image is shown itself (small,
    or unreadable: the gallery then shows the broken link)."""
    if image_files.is_thumbnail(Path(file).name):
        return None  # outputs.keep=thumbnails: the file kept is the thumbnail
    image = folder / file
    relative = f"{FOLDER}/{Path(file).with_suffix('.jpg').as_posix()}"
    target = folder / relative
    try:
        if target.is_file() and target.stat().st_mtime_ns >= image.stat().st_mtime_ns:
            return relative  # written by an earlier build, from this very image
        thumb = thumbnails.of(image)  # the writer's, else read back
        if max(thumb.size) < thumbnails.THUMB:  # a thumbnail never grows: the image is this small
            return None
        encoded = io.BytesIO()
        thumb.save(encoded, format="JPEG", quality=QUALITY)
    except OSError:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    records.atomic_write_bytes(target, encoded.getvalue())
    return relative
