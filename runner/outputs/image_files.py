"""A job's image files: PNG, WebP or JPEG (`outputs.format`), full size or as the report's thumbnail
(`outputs.keep`), each carrying its metadata (runner.outputs.png_metadata).

PNG keeps its metadata in text chunks; WebP and JPEG in their EXIF block (runner.outputs.exif_metadata),
where AUTOMATIC1111 puts it. Torch-free.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, Mapping

from runner.errors import UserError
from runner.outputs import exif_metadata, png_metadata

# outputs.format -> (Pillow's format name, file suffix)
FORMATS = {"png": ("PNG", ".png"), "webp": ("WEBP", ".webp"), "jpeg": ("JPEG", ".jpg")}
SUFFIXES = tuple(suffix for _, suffix in FORMATS.values())
THUMBNAIL_MARK = "_thumb"  # image_00_seed0_thumb.webp: a thumbnail kept in place of the image
# The codec library of each format, as PIL.features names it: recorded in run.json's versions,
# since a lossy encoder's output (and so a reproduction's bytes) depends on its version.
CODECS = {"webp": "webp", "jpeg": "jpg"}


@dataclass(frozen=True)
class ImageFormat:
    """The `outputs` settings a job's images are written with."""

    format: str = "png"
    quality: int = 90
    lossless: bool = False
    keep: str = "all"

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> "ImageFormat":
        """From a resolved config as plain data (run.json's `config`); the defaults where it has none."""
        outputs = config.get("outputs") or {}
        return cls(**{f.name: outputs[f.name] for f in fields(cls) if f.name in outputs})

    @property
    def suffix(self) -> str:
        return FORMATS[self.format][1]

    @property
    def exact(self) -> bool:
        """Whether the file decodes to the very pixels written (PNG, lossless WebP)."""
        return self.format == "png" or (self.format == "webp" and self.lossless)

    @property
    def thumbnails_only(self) -> bool:
        return self.keep == "thumbnails"


def file_name(index: int, seed: int, settings: ImageFormat, thumbnail: bool = False) -> str:
    return f"image_{index:02d}_seed{seed}{THUMBNAIL_MARK if thumbnail else ''}{settings.suffix}"


def is_image_file(name: str) -> bool:
    """Whether a job folder's file `name` is one of its images (any format, full or thumbnail)."""
    return name.startswith("image_") and name.endswith(SUFFIXES)


def is_thumbnail(name: str) -> bool:
    """Whether an image file is a thumbnail kept in place of its image (outputs.keep=thumbnails)."""
    return is_image_file(name) and Path(name).stem.endswith(THUMBNAIL_MARK)


def encode(image: Any, settings: ImageFormat, record: Dict[str, Any], entry: Dict[str, Any]) -> bytes:
    """The file's bytes: the image in its format, with the A1111 `parameters` text and our record."""
    buffer = io.BytesIO()
    pillow_format = FORMATS[settings.format][0]
    if settings.format == "png":
        image.save(buffer, format=pillow_format, pnginfo=png_metadata.png_info(record, entry))
        return buffer.getvalue()
    exif = exif_metadata.exif_bytes(png_metadata.parameters_text(record, entry), png_metadata.record_text(record, entry))
    if settings.format == "jpeg" and len(exif) > exif_metadata.JPEG_EXIF_LIMIT:
        raise UserError(f"{entry['file']}: its metadata takes {len(exif):,} bytes, more than a JPEG's EXIF block "
                        f"holds ({exif_metadata.JPEG_EXIF_LIMIT:,}). Use outputs.format=webp or png, or a "
                        "smaller hydra.sweeper.batch_size (each image records the call's jobs).")
    options = {"lossless": True} if settings.lossless else {"quality": settings.quality}
    image.convert("RGB").save(buffer, format=pillow_format, exif=exif, **options)
    return buffer.getvalue()


def codec_versions(settings: ImageFormat) -> Dict[str, str]:
    """{"libwebp": "1.6.0"} or {"libjpeg": "6.2"}: the encoder's library; {} for PNG."""
    codec = CODECS.get(settings.format)
    if codec is None:
        return {}
    from PIL import features

    return {f"lib{codec.replace('jpg', 'jpeg')}": str(features.version(codec))}
