"""Tiny zoo: deterministic, locally generated stand-ins for the SDXL weights the runner uses.

Every model has the real SDXL architecture (only narrower) and is saved in the real on-disk
format, so the diffusers code that loads real weights loads these unchanged, offline, on CPU:

    <zoo>/sdxl-base/               StableDiffusionXLPipeline folder
    <zoo>/sdxl-inpaint/            StableDiffusionXLInpaintPipeline folder (9-channel UNet)
    <zoo>/lcm-lora-sdxl/           LCM-LoRA twin, diffusers/peft keys
    <zoo>/papercut/                style LoRA twin, kohya keys
    <zoo>/tcd-lora-sdxl/           TCD-SDXL LoRA twin, diffusers/peft keys
    <zoo>/controlnet-canny-sdxl/   ControlNetModel folder
    <zoo>/t2i-adapter-canny-sdxl/  T2IAdapter folder (full_adapter_xl)
    <zoo>/clip-vit-large-patch14/  CLIPModel + CLIPProcessor, the metrics' scorer
    <zoo>/sd15-base/, sd15-inpaint/, controlnet-canny-sd15/, lcm-lora-sdv1-5/, ssd-1b/, lcm-lora-ssd-1b/
                                   the other bases of the card and their LCM-LoRAs (family_twins)
    <zoo>/images/                  procedurally drawn input images
    <zoo>/single-file/sdxl-base.safetensors   the SDXL twin as one checkpoint, original key layout

This module finds, locks, builds and checks the zoo; `twins` builds the models (`tokenizer` their
CLIP tokenizers), `images` draws the input images. torch and diffusers are imported inside the
builders so that `zoo_dir()` stays instant. `python -m runner.zoo [--rebuild] [--out DIR]` prints
the zoo folder, building it if needed; `--as-hub-cache DIR` also lays the twins out as a Hugging
Face cache under the real repository ids (`hub_cache`).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ZOO_VERSION = "5"  # 2: the fp16-fix VAE and TAESD-XL twins; 3: a CLIP scorer; 4: weights exact in
# float16, ten layers in the second text encoder, the single-file SDXL twin; 5: SD 1.5 and SSD-1B, a
# TCD LoRA, an img2img image
# One 4-step LCM text-to-image job (1 image, VAE decode included) takes about 0.4-0.6 s at this
# size on a 2-core CPU. Any size the XL T2I-Adapter takes must be a multiple of 16 (it
# pixel-unshuffles by 16); SDXL pipelines alone need multiples of 8.
TINY_HEIGHT = 256
TINY_WIDTH = 256

MANIFEST_NAME = "zoo_manifest.json"  # written last: its presence marks a complete zoo
ENV_VAR = "LCM_RUNNER_ZOO"


def zoo_dir() -> Path:
    """Where the zoo lives: $LCM_RUNNER_ZOO, else the user's cache folder. Builds nothing."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser().absolute()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser().absolute() / "lcm-runner" / f"tiny-zoo-v{ZOO_VERSION}"


def ensure_zoo(path: Path | None = None, rebuild: bool = False) -> Path:
    """Return the zoo folder, building it first if it is missing, incomplete or `rebuild`."""
    dest = Path(path).expanduser().absolute() if path else zoo_dir()
    if not rebuild and _is_complete(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _lock(dest.parent / f".{dest.name}.lock"):
        # Another process may have finished the build while we waited for the lock.
        if rebuild or not _is_complete(dest):
            _build_atomically(dest)
    return dest


def build_zoo(dest: Path) -> None:
    """Build every zoo entry into `dest`, then write the manifest that marks it complete."""
    import torch

    from runner.zoo.family_twins import build_family_twins
    from runner.zoo.images import draw_images
    from runner.zoo.twins import (build_base_components, build_clip, build_controlnet, build_inpaint_pipeline,
                                  build_lcm_lora, build_papercut_lora, build_t2i_adapter, build_tcd_lora, tiny_autoencoder, tiny_vae)

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with torch.no_grad():
        base = build_base_components(dest)
        build_inpaint_pipeline(dest / "sdxl-inpaint", base)
        build_lcm_lora(dest / "lcm-lora-sdxl", base["unet"])
        build_papercut_lora(dest / "papercut", base["unet"])
        build_tcd_lora(dest / "tcd-lora-sdxl", base["unet"])
        build_controlnet(dest / "controlnet-canny-sdxl", base["unet"])
        build_t2i_adapter(dest / "t2i-adapter-canny-sdxl")
        tiny_vae(seed=8, force_upcast=False).save_pretrained(dest / "sdxl-vae-fp16-fix")
        tiny_autoencoder().save_pretrained(dest / "taesdxl")
        build_clip(dest / "clip-vit-large-patch14")
        build_family_twins(dest)
    draw_images(dest / "images")
    _add_model_formats(dest)
    _write_manifest(dest)
    _log(f"built in {time.perf_counter() - started:.1f}s")


def _add_model_formats(dest: Path) -> None:
    """What the twins need to stand in for models as users hold them: weights exact in float16 (the
    hub cache's fp16 variant files), and the SDXL twin as one original-layout checkpoint."""
    from runner.zoo.precision import round_weights_to_half
    from runner.zoo.single_file import write_single_file

    round_weights_to_half(dest)
    write_single_file(dest / "sdxl-base", dest / "single-file" / "sdxl-base.safetensors")


# --- completeness, locking, atomic replacement -------------------------------------------------


def is_built() -> bool:
    """Whether the zoo is there, complete: planning reads twins' files only then, and never builds it."""
    return _is_complete(zoo_dir())


def _is_complete(dest: Path) -> bool:
    manifest = dest / MANIFEST_NAME
    if not manifest.is_file():
        return False
    try:
        content = json.loads(manifest.read_text())
    except ValueError:
        return False
    return content.get("zoo_version") == ZOO_VERSION and all(
        (dest / name).is_file() for name in content.get("files", {})
    )


@contextlib.contextmanager
def _lock(lock_path: Path):
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _build_atomically(dest: Path) -> None:
    """Build in a hidden sibling folder and rename it into place, so `dest` is never half built.

    Must be called with the lock held: leftovers of interrupted builds are then safe to delete.
    """
    if dest.exists() and not _is_replaceable(dest):
        raise FileExistsError(f"{dest} exists and is not a tiny zoo; refusing to replace it")
    for leftover in dest.parent.glob(f".{dest.name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the zoo is a shared cache
    try:
        build_zoo(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        os.rename(dest, old / "old")
        os.rename(staging, dest)
        shutil.rmtree(old)
    else:
        os.rename(staging, dest)


def _is_replaceable(dest: Path) -> bool:
    """Only an empty folder or a (possibly stale or damaged) zoo may be replaced."""
    return dest.is_dir() and (not any(dest.iterdir()) or (dest / MANIFEST_NAME).exists())


def _write_manifest(dest: Path) -> None:
    files = {
        path.relative_to(dest).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(dest.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }
    manifest = {"zoo_version": ZOO_VERSION, "files": files}
    (dest / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _log(message: str) -> None:
    print(f"[tiny-zoo] {message}", file=sys.stderr)


# --- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runner.zoo", description="Print the tiny zoo folder, building it if needed."
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild even if present")
    parser.add_argument("--out", type=Path, metavar="DIR", help="use DIR instead of the default")
    parser.add_argument("--as-hub-cache", type=Path, metavar="DIR",
                        help="also lay the twins out as a Hugging Face cache in DIR (use it with HF_HUB_CACHE=DIR)")
    args = parser.parse_args(argv)
    # stdout carries only the path; anything a library prints while building goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        path = ensure_zoo(args.out, rebuild=args.rebuild)
        if args.as_hub_cache is not None:
            from runner.zoo.hub_cache import lay_out_hub_cache

            path = lay_out_hub_cache(path, args.as_hub_cache.expanduser().absolute())
    print(path)
    return 0

