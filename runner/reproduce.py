"""`lcm-reproduce IMAGE.png [key=value ...] [--out DIR]`: re-render an image from its own metadata.

Every PNG lcm-run writes carries the fully resolved config of its job (the `lcm-runner` text chunk,
see runner/metadata.py). This command re-runs that job into a new run folder (same config, so the
same num_images and seeds; an image of a call that made other jobs' images too — a sweep's
batching — is re-made in that call, whose jobs its PNG names: identical pixels on the same versions
and device) and names the file at the image's index.

The PNG is untrusted input. Its config may only select what the project's own config groups allow:
it is merged onto the structured schema (unknown keys are errors), its scheduler must be one of the
`conf/scheduler/*.yaml` options, no other `_target_`-like key may appear anywhere (they would make
Hydra's `instantiate` call arbitrary code), and no value may hold an interpolation (`${...}`
resolvers can read environment variables and files). Then `plan_job` checks values, files and
conditioning kinds, as for lcm-run. Command-line overrides are applied after these checks, and
the result is checked again.

`read_png_metadata(path)` reads both chunks back (the A1111 `parameters` text parsed the way
AUTOMATIC1111's webui parses it).
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from runner import batching, metadata, records
from runner.config import RunConfig
from runner.errors import UserError

log = logging.getLogger("lcm-reproduce")


class JobFailed(Exception):
    """The checks passed but the job itself failed (exit 1, like a failed lcm-run job)."""

REPRODUCE_DIR = "reproduce"  # <paths.root>/reproduce/<date_time>/
STAMP = "%Y-%m-%d_%H-%M-%S"
REPRODUCED_KEY = "reproduced_from"  # what run.json says about the image it re-rendered

# AUTOMATIC1111's own pattern for the `Key: value, ...` line (modules/infotext_utils.py).
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")

# Keys Hydra's instantiate gives meaning to. Only the scheduler's own `_target_` / `_partial_` may
# appear in a PNG's config; any other key of this `_name_` shape is refused wherever it is.
_DUNDER = re.compile(r"^_.*_$")
_SCHEDULER_KEYS = ("_target_", "_partial_")
# Switches that widen what a run may do rather than what it draws: the PNG may not turn them on;
# only the person at the command line may (e.g. `allow_pickle=true`, for weights they trust).
COMMAND_LINE_ONLY = {"allow_pickle": False}


# --------------------------------------------------------------------------------------------
# Reading the metadata back
# --------------------------------------------------------------------------------------------


def read_png_metadata(path: Union[str, Path]) -> Dict[str, Any]:
    """Both text chunks of a PNG written by lcm-run.

    Returns `{"parameters": <A1111 text parsed, or None>, "lcm-runner": <the JSON record, or None>,
    "text": <every text chunk, raw>}`. Raises UserError when the file is missing, is not a PNG, or
    its `lcm-runner` chunk is not a JSON object.
    """
    path = Path(path)
    text = _png_text(path)
    parameters = text.get(metadata.PARAMETERS_KEY)
    record = text.get(metadata.RECORD_KEY)
    if record is not None:
        try:
            record = json.loads(record)
        except (ValueError, RecursionError):
            record = None
            raise UserError(
                f"{path} has an lcm-runner text chunk that is not valid JSON: the file was damaged or "
                "edited. Reproduce from an untouched PNG of the job, or re-run the job from its run.json."
            ) from None
        if not isinstance(record, dict):
            raise UserError(f"{path}: its lcm-runner metadata is not a JSON object, so it was not written "
                            "by lcm-run (or was edited). Use an untouched PNG of the job.")
    return {
        metadata.PARAMETERS_KEY: None if parameters is None else parse_parameters(parameters),
        metadata.RECORD_KEY: record,
        "text": text,
    }


def parse_parameters(text: str) -> Dict[str, str]:
    """AUTOMATIC1111's `parse_generation_parameters`, without its webui-specific defaults.

    The prompt is every line before `Negative prompt:` (or before the last line), the negative
    prompt the lines from there to the last line, and the last line `Key: value, ...` pairs matched
    with A1111's own regex; values in double quotes are unquoted with json.loads. All values stay
    strings, as in A1111; a `WxH` value is also split into `Key-1` and `Key-2` as A1111 does.
    """
    *lines, last = text.strip().split("\n")
    if len(RE_PARAM.findall(last)) < 3:  # A1111: not a parameters line, so part of the prompt
        lines.append(last)
        last = ""
    prompt: List[str] = []
    negative: List[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    parsed = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in RE_PARAM.findall(last):
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                pass
        size = RE_IMAGESIZE.match(value)
        if size is not None:
            parsed[f"{key}-1"], parsed[f"{key}-2"] = size.groups()
        parsed[key] = value
    return parsed


def _png_text(path: Path) -> Dict[str, str]:
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise UserError(f"{path} does not exist. Give the path of a PNG written by lcm-run "
                        "(image_NN_seedS.png in a job folder).")
    if not path.is_file():
        raise UserError(f"{path} is not a file. Give the path of a PNG written by lcm-run "
                        "(image_NN_seedS.png in a job folder), not a folder.")
    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                raise UserError(
                    f"{path} is a {image.format} image, not a PNG: lcm-run writes PNGs, and converting "
                    "one to another format drops its metadata. Reproduce from the original PNG.")
            return {str(key): str(value) for key, value in image.text.items()}
    except UserError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as error:
        reason = "is not an image" if isinstance(error, UnidentifiedImageError) else "is too large to be ours"
        raise UserError(f"{path} {reason}: lcm-reproduce reads PNGs written by lcm-run "
                        "(image_NN_seedS.png in a job folder).") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise UserError(f"{path} is a damaged PNG ({error}); its metadata cannot be read. "
                        "Reproduce from an intact copy of the image.") from None


# --------------------------------------------------------------------------------------------
# From untrusted metadata to a checked config
# --------------------------------------------------------------------------------------------


def scheduler_targets() -> Set[str]:
    """Every `_target_` of the project's own `scheduler` group options (conf/scheduler/*.yaml)."""
    from runner.cli import config_dir

    targets = set()
    for option in sorted((Path(config_dir()) / "scheduler").glob("*.yaml")):
        target = OmegaConf.load(option).get("_target_")
        if isinstance(target, str):
            targets.add(target)
    return targets


def config_groups() -> Set[str]:
    """Names of the config groups (conf/ folders) and of the schema's sections: not keys to set."""
    from runner.cli import config_dir

    groups = {p.name for p in Path(config_dir()).iterdir() if p.is_dir()} | {"experiment", "hydra"}
    schema = OmegaConf.structured(RunConfig)
    return groups | {key for key in schema if OmegaConf.is_config(schema._get_node(key))}


PNG_FIX = ("lcm-reproduce only runs configs that the project's own config groups could have made; this "
           "one was edited or made elsewhere. Reproduce from an untouched PNG of the job, or run lcm-run "
           "with the settings you want.")
OVERRIDE_FIX = "Fix or drop the override (give plain values: sampling.steps=8, sampling.prompt='a fox')."


def checked_config(data: Any, origin: str, targets: Set[str], fix: str = PNG_FIX) -> DictConfig:
    """The config `data` (plain JSON data) as a DictConfig on the run schema, or a UserError.

    `origin` says where the values came from ("IMAGE.png's lcm-runner metadata"), `fix` what to do."""
    if not isinstance(data, dict):
        raise UserError(f"{origin} has no config object (found {type(data).__name__}): it was not "
                        "written by lcm-run, or it was edited. Use an untouched PNG of the job.")
    try:
        problems = list(_unsafe(data, ()))
    except RecursionError:
        problems = ["its values are nested too deeply to be a config"]
    scheduler = data.get("scheduler")
    if not isinstance(scheduler, dict):
        problems.append("scheduler is missing or not a mapping")
    else:
        target = scheduler.get("_target_")
        if target not in targets:
            problems.append(f"scheduler._target_={target!r} is not one of the project's schedulers "
                            f"({', '.join(sorted(targets))})")
        if scheduler.get("_partial_") is not True:
            problems.append(f"scheduler._partial_={scheduler.get('_partial_')!r} must be true")
    if problems:
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise UserError(
            f"{origin} is refused: " + "; ".join(problems[:5]) + more + ". " + fix
        )
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), data)
    except RecursionError:
        raise UserError(f"{origin} is refused: its values are nested too deeply to be a config. {fix}") from None
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "?"
        reason = str(error).strip().splitlines()[0]
        raise UserError(
            f"{origin} does not fit the run schema at {key}: {reason}. The config has a key lcm-run "
            "does not know or a value of the wrong type. " + fix
        ) from None
    missing = sorted(set(OmegaConf.missing_keys(cfg)) - {"paths.output_dir"})
    if missing:
        raise UserError(f"{origin} lacks {', '.join(missing)}: its config is incomplete (edited, or not "
                        "written by lcm-run). Give the value as an override (for example "
                        f"{missing[0]}=...), or reproduce from an untouched PNG.")
    OmegaConf.set_struct(cfg, True)
    return cfg


def _unsafe(node: Any, path: Tuple[str, ...]) -> Iterator[str]:
    """Everything in plain JSON data that could make the config run code or read the machine."""
    where = ".".join(path) or "the config"
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                yield f"{where} has a key that is not a string ({key!r})"
                continue
            here = ".".join((*path, key))
            if "${" in key:
                yield f"the key {here!r} holds an interpolation"
            if _DUNDER.match(key) and not (path == ("scheduler",) and key in _SCHEDULER_KEYS):
                yield f"{here} is an instantiation key (only scheduler._target_ and scheduler._partial_ may appear)"
            yield from _unsafe(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _unsafe(value, (*path, f"[{index}]"))
    elif isinstance(node, str):
        if "${" in node:
            yield (f"{where}={node!r} holds an interpolation (${{...}}), which could read environment "
                   "variables or files; the metadata of lcm-run holds resolved values only")
    elif isinstance(node, float):
        if not math.isfinite(node):
            yield f"{where}={node!r} is not a finite number"
    elif node is not None and not isinstance(node, (bool, int)):
        yield f"{where} has a value of type {type(node).__name__}"


def _root_problem(data: Dict[str, Any], origin: str) -> None:
    """The PNG picks the default output folder through paths.root: keep it under the current folder."""
    paths = data.get("paths") or {}
    root = paths.get("root", "outputs") if isinstance(paths, dict) else None
    if (not isinstance(root, str) or not root.strip() or not root.isprintable() or Path(root).is_absolute()
            or ".." in Path(root).parts or root.startswith("~")):
        raise UserError(
            f"{origin} is refused: paths.root={root!r} must be a relative folder without '..' (the "
            "default output folder is <paths.root>/reproduce/<time>/ under the current folder). "
            "Choose the folder yourself with --out DIR or paths.root=DIR."
        )


def apply_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """The config data with command-line overrides (Hydra's grammar, dotted keys only) applied."""
    if not overrides:
        return data
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as error:
        raise UserError(f"Could not parse the overrides: {str(error).strip().splitlines()[0]}. Write them "
                        "as key=value with dotted keys, for example sampling.steps=8.") from None
    sections = config_groups()
    data = json.loads(json.dumps(data))  # a copy; the data is plain JSON
    for override in parsed:
        key, line = override.key_or_group, override.input_line
        if override.package is not None:
            raise UserError(f"{line}: packages (@...) do not apply to lcm-reproduce; give a dotted key "
                            "of the image's config, for example sampling.steps=8.")
        if override.is_sweep_override():
            raise UserError(f"{line} is a sweep (several values); lcm-reproduce renders one job. Give one "
                            "value, or sweep with lcm-run -m.")
        if "." not in key and key in sections:
            raise UserError(
                f"{line} names the config group or section {key!r}: lcm-reproduce "
                "re-runs the image's own resolved config, so it takes dotted keys of that config "
                "(sampling.steps=8, lora.papercut.weight=0.5, device.type=cpu), not groups like zoo=tiny. "
                "To compose another config, use lcm-run."
            )
        if key in ("paths.output_dir",):
            raise UserError(f"{line}: choose the new run folder with --out DIR instead.")
        *parents, last = key.split(".")
        node = data
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"{line}: {part} in {key} is a value, not a section of the config; "
                                "check the key's spelling.")
            node = child
        if override.type == OverrideType.DEL:
            if parents[:1] not in (["scheduler"], ["lora"]) or len(parents) != 1:
                raise UserError(f"{line}: only scheduler options (~scheduler.NAME) and LoRA adapters "
                                "(~lora.NAME) can be removed; set other keys to a value instead.")
            if last not in node:
                raise UserError(f"{line}: the image's config has no {key} to remove.")
            del node[last]
        else:
            node[last] = override.value()
    return data


def _check_command_line_only(data: Any, overrides: Sequence[str], origin: str) -> None:
    if not isinstance(data, dict):
        return  # checked_config says what is wrong
    given = {line.split("=", 1)[0].lstrip("+~") for line in overrides}
    for key, safe in COMMAND_LINE_ONLY.items():
        if key in data and data[key] != safe and key not in given:
            raise UserError(
                f"{origin} sets {key}={data[key]!r}, which lets a run load pickle files that can execute "
                f"code; lcm-reproduce never takes that from a file. If you trust every weight file this "
                f"job loads, say so yourself: add {key}=true to the command line."
            )


def _image_entry(record: Dict[str, Any], origin: str) -> Dict[str, Any]:
    image = record.get("image")
    ok = (isinstance(image, dict) and isinstance(image.get("index"), int) and not isinstance(image["index"], bool)
          and isinstance(image.get("seed"), int) and not isinstance(image["seed"], bool) and image["index"] >= 0)
    if not ok:
        raise UserError(f"{origin} does not say which image of its job this is (image.index and image.seed): "
                        "it was edited, or written by another tool. Use an untouched PNG of the job.")
    return image


def _check_seed(image: Dict[str, Any], cfg: DictConfig, origin: str) -> None:
    expected = int(cfg.sampling.seed) + image["index"]
    if image["seed"] != expected or image["index"] >= int(cfg.sampling.num_images):
        raise UserError(
            f"{origin} is inconsistent: it calls itself image {image['index']} with seed {image['seed']}, "
            f"but its config (sampling.seed={cfg.sampling.seed}, sampling.num_images={cfg.sampling.num_images}) "
            "makes no such image. It was edited; reproduce from an untouched PNG of the job."
        )


def _recorded_call(record: Dict[str, Any], cfg: DictConfig, origin: str) -> Optional[Tuple[List[DictConfig], int]]:
    """The configs of the call that made the image, when that call made other jobs' images too (a
    sweep's batching), and the image's job's place among them: re-made as the same call, in its
    order, the pixels are the same; alone, within a level. None: it ran alone, its PNG predates
    `batch.members`, or the overrides change the seed or prompts the call's jobs differed in."""
    batch = record.get("batch")
    members = batch.get("members") if isinstance(batch, dict) else None
    if members is None:
        return None
    if list(_unsafe(members, ("batch", "members"))) or not _well_formed_members(members):
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


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


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


def _version_notes(recorded: Any) -> List[str]:
    if not isinstance(recorded, dict):
        return ["the image does not record the versions it was made with"]
    now = records.versions()
    return [_printable(f"{name} {recorded.get(name)} (now {now.get(name)})")
            for name in sorted(set(recorded) | set(now), key=str)
            if name != "lcm-runner" and recorded.get(name) != now.get(name)][:20]


def _printable(text: str) -> str:
    """Text from a PNG goes to a terminal: escape control characters (no terminal escapes)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _same_pixels(a: Path, b: Path) -> Optional[bool]:
    import numpy as np
    from PIL import Image

    try:
        with Image.open(a) as first, Image.open(b) as second:
            return first.mode == second.mode and first.size == second.size and bool(
                np.array_equal(np.asarray(first), np.asarray(second)))
    except Exception:  # the original is only compared, never trusted: an unreadable one is "unknown"
        return None


def reproduce(image: Union[str, Path], overrides: Sequence[str] = (), out: Optional[Union[str, Path]] = None
              ) -> Dict[str, Any]:
    """Re-render `image` into a new run folder. Returns the new run.json record, with the new
    folder and file under `reproduced_from` (`folder`, `file`, `pixels_equal`)."""
    image_path = Path(image)
    found = read_png_metadata(image_path)
    record = found[metadata.RECORD_KEY]
    origin = f"{image_path}'s lcm-runner metadata"
    if record is None:
        raise UserError(f"{image_path} has no lcm-runner metadata: it was not written by lcm-run (or a tool "
                        "stripped its text chunks, as most image editors and converters do). Reproduce from "
                        "the PNG in the job folder, or re-run the job from its run.json.")
    targets = scheduler_targets()
    data = record.get("config")
    _check_command_line_only(data, overrides, origin)
    cfg = checked_config(data, origin, targets)
    _root_problem(data, origin)
    entry = _image_entry(record, origin)
    _check_seed(entry, cfg, origin)
    recorded_overrides = record.get("overrides", [])
    if not (isinstance(recorded_overrides, list) and all(isinstance(o, str) for o in recorded_overrides)):
        raise UserError(f"{origin} has malformed overrides (not a list of strings): it was edited. "
                        "Use an untouched PNG of the job.")
    if overrides:
        cfg = checked_config(apply_overrides(data, overrides), f"The config with the overrides {' '.join(overrides)}",
                             targets, OVERRIDE_FIX)
    if cfg.get("plan"):
        raise UserError("plan=true asks for a dry run, which lcm-reproduce does not make: it renders. "
                        "Drop plan=true.")
    index = entry["index"]
    if index >= int(cfg.sampling.num_images):
        raise UserError(f"sampling.num_images={cfg.sampling.num_images} leaves out image {index}, the one to "
                        f"reproduce; keep sampling.num_images at {index + 1} or more.")
    folder = _output_folder(None if out is None else str(out), cfg, image_path)
    cfg.paths.output_dir = str(folder)

    from runner.plan import plan_job

    plan_job(cfg)  # values, files, models, conditioning: every check of lcm-run, before anything is written
    _check_scheduler_options(cfg)
    notes = _version_notes(record.get("versions"))
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
        result = run(cfg, folder, overrides=list(overrides))
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
        batching.clear()  # the images of the call's other jobs, not written
    new_file = result["images"][index]["file"]
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
        "pixels_equal": _same_pixels(image_path, folder / new_file),
    }
    records.write_json(folder / records.RUN_JSON, result)
    return result


USAGE_EPILOG = """\
examples:
  lcm-reproduce outputs/runs/2026-11-28_19-30-26/image_01_seed1.png
  lcm-reproduce IMAGE.png sampling.steps=8 --out outputs/steps8
  lcm-reproduce IMAGE.png lora.papercut.weight=0.5 device.type=cpu

The image's config is re-run as recorded (same num_images and seeds; an image made in one call
with other jobs of a sweep, in that same call): on the same versions and device the pixels are
identical. The last line on stdout names the new
folder and the re-rendered file; run.json there records where it came from (reproduced_from).
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lcm-reproduce",
        description="Re-render an image written by lcm-run from the metadata in its PNG, into a new run folder.",
        epilog=USAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("image", metavar="IMAGE.png", help="a PNG written by lcm-run (image_NN_seedS.png)")
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
        return 2
    except JobFailed as error:
        print(f"lcm-reproduce: error: {_printable(str(error))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lcm-reproduce: interrupted", file=sys.stderr)
        return 130
    done = result[REPRODUCED_KEY]
    same = {True: "pixels identical to", False: "pixels differ from", None: "could not compare with"}
    if done["pixels_equal"] is False and not args.overrides:
        log.warning("the pixels differ from the original: another device, dtype or library version "
                    "changes them (see the versions above and device.type in run.json), as does a "
                    "sweep's batching when the PNG predates batch.members and the job was re-run alone")
    print(f"Reproduced in {done['folder']}: {done['new_file']} "
          f"({same[done['pixels_equal']]} {args.image})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
