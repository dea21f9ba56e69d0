"""`lcm-reproduce IMAGE [key=value ...] [--out DIR]`: re-render an image from its own metadata.

Every image lcm-run writes (PNG, WebP or JPEG) carries the fully resolved config of its job (the
`lcm-runner` record, read by runner.outputs.png_metadata). This command checks that untrusted config
(runner.config.recorded), then `plan_job` checks values, files and conditioning kinds as for lcm-run,
and the job runs again into a new run folder (same config, so the same num_images and seeds; an
image of a call that made other jobs' images too — a sweep's batching — is re-made in that call,
whose jobs its PNG names: identical pixels on the same versions and device) and names the file at
the image's index. The new image is written as the original was (outputs.format, outputs.quality),
always full size, and compared decoded: a WebP or JPEG re-encoded by the same codec version decodes
to the same pixels. A thumbnail kept by outputs.keep=thumbnails is compared with the new image's
thumbnail, written beside it.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from omegaconf import DictConfig

from runner.sweep import batching
from runner.sweep.handoff import HANDOFF
from runner.outputs import image_files, png_metadata, records
from runner.config import recorded
from runner.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UserError

log = logging.getLogger("lcm-reproduce")


class JobFailed(Exception):
    """The checks passed but the job itself failed (exit 1, like a failed lcm-run job)."""


REPRODUCE_DIR = "reproduce"  # <paths.root>/reproduce/<date_time>/
STAMP = "%Y-%m-%d_%H-%M-%S"
REPRODUCED_KEY = "reproduced_from"  # what run.json says about the image it re-rendered


def _recorded_call(record: Dict[str, Any], cfg: DictConfig, origin: str) -> Optional[Tuple[List[DictConfig], int]]:
    """The configs of the call that made the image, when that call made other jobs' images too (a
    sweep's batching), and the image's job's place among them: re-made as the same call, in its
    order, the pixels are the same; alone, within a level. None: it ran alone, its PNG predates
    `batch.members`, or the overrides change the seed or prompts the call's jobs differed in."""
    batch = record.get("batch")
    members = batch.get("members") if isinstance(batch, dict) else None
    if members is None:
        return None
    if list(recorded.unsafe_values(members, ("batch", "members"))) or not _well_formed_members(members):
        raise UserError(f"{origin} has a malformed batch.members (each of the call's jobs: its "
                        f"{', '.join(batching.BATCHABLE)}): it was edited. Use an untouched PNG of the job.")
    call = batching.configs_of_call(cfg, members)
    if call is None:
        log.info("re-run alone: the overrides change what the %d jobs of its call differed in", len(members))
    else:
        log.info("re-making the one call of %d jobs that made it (a sweep's batching), in its order", len(members))
    return call


def _well_formed_members(members: Any) -> bool:
    def one(member: Any) -> bool:
        return (isinstance(member, dict) and set(member) == set(batching.BATCHABLE)
                and isinstance(member["seed"], int) and not isinstance(member["seed"], bool)
                and isinstance(member["prompt"], str)
                and (member["negative_prompt"] is None or isinstance(member["negative_prompt"], str)))
    return isinstance(members, list) and len(members) > 1 and all(one(member) for member in members)


def _check_scheduler_options(cfg: DictConfig) -> None:
    """An option the scheduler class does not take fails before the run folder is made."""
    options = [key for key in cfg.scheduler if not str(key).startswith("_")]
    if not options:
        return
    import inspect

    from hydra.utils import get_method

    scheduler_class = get_method(cfg.scheduler._target_).__self__  # one of the project's own targets
    accepted = set(inspect.signature(scheduler_class.__init__).parameters) - {"self"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise UserError(f"scheduler.{unknown[0]} is not an option of {scheduler_class.__name__} (it accepts: "
                        f"{', '.join(sorted(accepted))}). Remove it with ~scheduler.{unknown[0]}.")


def _output_folder(out: Optional[str], cfg: DictConfig, image_path: Path) -> Path:
    if out is not None:
        folder = Path(out).expanduser()
    else:
        folder = Path(str(cfg.paths.root)) / REPRODUCE_DIR / datetime.datetime.now().strftime(STAMP)
    folder = folder.resolve()
    if folder == image_path.resolve().parent:
        raise UserError(f"{folder} is the folder of the image's own job; its results are kept. "
                        "Choose a new folder with --out DIR.")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UserError(f"{folder} already exists and is not an empty folder; nothing there is overwritten. "
                        "Choose a new folder with --out DIR (or wait a second for a new default name).")
    return folder


def _version_notes(recorded: Any, settings: image_files.ImageFormat) -> List[str]:
    if not isinstance(recorded, dict):
        return ["the image does not record the versions it was made with"]
    now = {**records.versions(), **image_files.codec_versions(settings)}
    return [_printable(f"{name} {recorded.get(name)} (now {now.get(name)})")
            for name in sorted(set(recorded) | set(now), key=str)
            if name != "lcm-runner" and recorded.get(name) != now.get(name)][:20]


def _printable(text: str) -> str:
    """Text from a PNG goes to a terminal: escape control characters (no terminal escapes)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _compare(a: Path, b: Path) -> Tuple[Optional[bool], Optional[int]]:
    """Whether two image files decode to the same pixels, and the largest difference of one channel
    of one pixel where they have the same size (None: unknown)."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(a) as first, Image.open(b) as second:
            if first.size != second.size:
                return False, None
            one, other = np.asarray(first.convert("RGB"), dtype=np.int16), np.asarray(second.convert("RGB"), dtype=np.int16)
            return first.mode == second.mode and bool(np.array_equal(one, other)), int(np.abs(one - other).max())
    except Exception:  # the original is only compared, never trusted: an unreadable one is "unknown"
        return None, None


def _override_keys(overrides: Sequence[str]) -> List[str]:
    return [str(o).split("=", 1)[0].lstrip("+~") for o in overrides]


def reproduce(image: Union[str, Path], overrides: Sequence[str] = (), out: Optional[Union[str, Path]] = None
              ) -> Dict[str, Any]:
    """Re-render `image` into a new run folder. Returns the new run.json record, with the new
    folder and file under `reproduced_from` (`folder`, `file`, `pixels_equal`, `max_difference`)."""
    image_path = Path(image)
    found = png_metadata.read_image_metadata(image_path)
    record = found[png_metadata.RECORD_KEY]
    origin = f"{image_path}'s lcm-runner metadata"
    if record is None:
        raise UserError(f"{image_path} has no lcm-runner metadata: it was not written by lcm-run (or a tool "
                        "stripped its metadata, as most image editors and converters do). Reproduce from "
                        "the image in the job folder, or re-run the job from its run.json.")
    targets = recorded.scheduler_targets()
    data = record.get("config")
    recorded.check_command_line_only(data, overrides, origin)
    cfg = recorded.checked_config(data, origin, targets)
    recorded.check_root(data, origin)
    entry = recorded.image_entry(record, origin)
    recorded.check_seed(entry, cfg, origin)
    recorded_overrides = record.get("overrides", [])
    if not (isinstance(recorded_overrides, list) and all(isinstance(o, str) for o in recorded_overrides)):
        raise UserError(f"{origin} has malformed overrides (not a list of strings): it was edited. "
                        "Use an untouched PNG of the job.")
    if overrides:
        cfg = recorded.checked_config(recorded.apply_overrides(data, overrides), f"The config with the overrides {' '.join(overrides)}",
                             targets, recorded.OVERRIDE_FIX)
    if cfg.get("plan"):
        raise UserError("plan=true asks for a dry run, which lcm-reproduce does not make: it renders. "
                        "Drop plan=true.")
    index = entry["index"]
    if index >= int(cfg.sampling.num_images):
        raise UserError(f"sampling.num_images={cfg.sampling.num_images} leaves out image {index}, the one to "
                        f"reproduce; keep sampling.num_images at {index + 1} or more.")
    folder = _output_folder(None if out is None else str(out), cfg, image_path)
    cfg.paths.output_dir = str(folder)
    if "outputs.keep" not in _override_keys(overrides):
        cfg.outputs.keep = "all"  # a reproduction makes the image itself, even of a kept thumbnail
    settings = image_files.ImageFormat.of({"outputs": dict(cfg.outputs)})
    from_thumbnail = entry.get("thumbnail") is True and not settings.thumbnails_only

    from runner.config.job_plan import plan_job

    plan_job(cfg)  # values, files, models, conditioning: every check of lcm-run, before anything is written
    _check_scheduler_options(cfg)
    notes = _version_notes(record.get("versions"), settings)
    if notes:
        log.warning("versions differ from the image's (pixels may differ): %s", "; ".join(notes))
    call = _recorded_call(record, cfg, origin)

    from runner.run import run

    try:
        folder.mkdir(parents=True, exist_ok=out is not None)  # an empty --out folder is fine
    except FileExistsError:
        raise UserError(f"{folder} appeared while checking (another lcm-reproduce?); run again, or choose "
                        "a folder with --out DIR.") from None
    try:
        if call is not None:
            batching.expect(*call)
        result = run(cfg, folder, overrides=list(overrides), thumbnail_files=from_thumbnail)
    except UserError:
        raise
    except Exception as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        raise JobFailed(
            f"the re-run failed: {type(error).__name__}: {error}. {folder / records.RUN_JSON} records it; "
            "set HYDRA_FULL_ERROR=1 for the full stack trace."
        ) from error
    finally:
        HANDOFF.reset()  # the images of the call's other jobs, not written
    new_file = result["images"][index]["file"]
    compared = image_files.file_name(index, result["images"][index]["seed"], settings, True) if from_thumbnail \
        else new_file
    equal, difference = _compare(image_path, folder / compared)
    result[REPRODUCED_KEY] = {
        "image": str(image_path.resolve()),
        "id": record.get("id"),
        "index": index,
        "seed": entry["seed"],
        "file": entry.get("file"),
        "overrides": list(overrides),
        "job_overrides": recorded_overrides,
        "versions": record.get("versions"),
        "folder": str(folder),
        "new_file": new_file,
        "compared_with": compared,  # the new image, or its thumbnail when the original is one
        "pixels_equal": equal,
        "max_difference": difference,  # of one channel of one pixel, 0-255; None: sizes differ
    }
    records.write_json(folder / records.RUN_JSON, result)
    return result


USAGE_EPILOG = """\
examples:
  lcm-reproduce outputs/runs/2026-11-28_19-30-26/image_01_seed1.png
  lcm-reproduce IMAGE.webp sampling.steps=8 --out outputs/steps8
  lcm-reproduce IMAGE.jpg lora.papercut.weight=0.5 device.type=cpu

The image's config is re-run as recorded (same num_images and seeds; an image made in one call
with other jobs of a sweep, in that same call) and written in the image's format and quality,
full size: on the same versions and device the pixels are identical (a WebP or JPEG decodes to the
same pixels when the same codec version encodes it; a thumbnail of outputs.keep=thumbnails is
compared with the new image's thumbnail). The last line on stdout names the new folder and the
re-rendered file; run.json there records where it came from (reproduced_from).
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lcm-reproduce",
        description="Re-render an image written by lcm-run (PNG, WebP or JPEG) from its metadata, into a new run folder.",
        epilog=USAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("image", metavar="IMAGE", help="an image written by lcm-run (image_NN_seedS.png, .webp or .jpg)")
    parser.add_argument("overrides", metavar="key=value", nargs="*", default=[],
                        help="dotted keys of the image's config to change, in Hydra's override syntax "
                             "(sampling.steps=8, lora.papercut.weight=0.5, ~scheduler.NAME); not groups")
    parser.add_argument("--out", metavar="DIR",
                        help="the new run folder (default: <paths.root>/reproduce/<date_time>/ under the "
                             "current folder); it must not exist, or be empty")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_intermixed_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[lcm-reproduce] %(message)s"))
    for name in ("lcm-reproduce", "lcm-run"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        result = reproduce(args.image, args.overrides, args.out)
    except UserError as error:
        print(f"lcm-reproduce: error: {_printable(str(error))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except JobFailed as error:
        print(f"lcm-reproduce: error: {_printable(str(error))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("lcm-reproduce: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    done = result[REPRODUCED_KEY]
    same = {True: "pixels identical to", False: "pixels differ from", None: "could not compare with"}
    if done["pixels_equal"] is False and not args.overrides:
        by = "" if done["max_difference"] is None else f" (by up to {done['max_difference']} of 255 in a channel)"
        log.warning("the pixels differ from the original%s: another device, dtype or library version "
                    "changes them (see the versions above and device.type in run.json), as does a "
                    "WebP or JPEG codec of another version (libwebp, libjpeg in versions), or a "
                    "sweep's batching when the image predates batch.members and the job was re-run alone", by)
    whose = "thumbnail's pixels" if done["compared_with"] != done["new_file"] else "pixels"
    print(f"Reproduced in {done['folder']}: {done['new_file']} "
          f"({same[done['pixels_equal']].replace('pixels', whose)} {args.image})")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
