"""The metadata of a WebP or JPEG image, in its EXIF block, where AUTOMATIC1111 puts it.

A1111 writes the `parameters` text into the Exif IFD's UserComment (tag 0x9286) with piexif:
`UNICODE\\0` then the text in UTF-16, big-endian like the block, and reads it back with
`piexif.helper.UserComment.load`. Pillow's own Exif writer gives a bytes value the type BYTE, which
that reader refuses (it wants UNDEFINED), so the block is written with piexif, as A1111 does.
Our JSON record goes into the MakerNote (0x927C, the tag EXIF leaves to the maker), after a
`lcm-runner\\0` prefix. Reading back needs Pillow only.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional

if TYPE_CHECKING:  # Pillow is imported by whoever opened the image
    from PIL import Image

EXIF_IFD = 0x8769
USER_COMMENT = 0x9286
MAKER_NOTE = 0x927C
UNICODE_PREFIX = b"UNICODE\0"  # EXIF's character code for UCS-2 / UTF-16
ASCII_PREFIX = b"ASCII\0\0\0"
RECORD_PREFIX = b"lcm-runner\0"
JPEG_EXIF_LIMIT = 65533  # bytes an APP1 segment holds after its length field ("Exif\0\0" included)


def exif_bytes(parameters: str, record: str) -> bytes:
    """The EXIF block (with its `Exif\\0\\0` header) holding both texts, as Pillow's `exif=` takes it."""
    import piexif
    import piexif.helper

    return piexif.dump({"Exif": {
        piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump(parameters, encoding="unicode"),
        piexif.ExifIFD.MakerNote: RECORD_PREFIX + record.encode("utf-8"),
    }})


def read_texts(image: "Image.Image") -> Dict[str, str]:
    """{"parameters": ..., "lcm-runner": ...}: the texts found in an opened image's EXIF block (either
    may be absent). Undecodable bytes are replaced, never trusted: the record is checked later."""
    exif = image.getexif().get_ifd(EXIF_IFD)
    found = {}
    comment = _user_comment(exif.get(USER_COMMENT))
    if comment:
        found["parameters"] = comment
    note = exif.get(MAKER_NOTE)
    if isinstance(note, bytes) and note.startswith(RECORD_PREFIX):
        found["lcm-runner"] = note[len(RECORD_PREFIX):].decode("utf-8", errors="replace")
    return found


def _user_comment(value) -> Optional[str]:
    """The UserComment as A1111 decodes it: UTF-16 (big-endian, as piexif writes) after `UNICODE\\0`,
    ASCII after its prefix, else UTF-8."""
    if not isinstance(value, bytes):
        return None
    if value.startswith(UNICODE_PREFIX):
        return value[len(UNICODE_PREFIX):].decode("utf-16-be", errors="replace")
    if value.startswith(ASCII_PREFIX):
        return value[len(ASCII_PREFIX):].decode("ascii", errors="replace")
    return value.decode("utf-8", errors="ignore")
