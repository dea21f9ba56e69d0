"""A config read back from an image's metadata, checked before anything runs (lcm-reproduce).

The PNG is untrusted input. Its config may only select what the project's own config groups allow:
it is merged onto the structured schema (unknown keys are errors), its scheduler must be one of the
`conf/scheduler/*.yaml` options, no other `_target_`-like key may appear anywhere (they would make
Hydra's `instantiate` call arbitrary code), and no value may hold an interpolation (`${...}`
resolvers can read environment variables and files). Command-line overrides are applied after these
checks, and the result is checked again. Torch-free, like the rest of runner.config.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Dict, Iterator, Sequence, Set, Tuple

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from runner.config import config_dir
from runner.config.schema import RunConfig
from runner.errors import UserError

# Keys Hydra's instantiate gives meaning to. Only the scheduler's own `_target_` / `_partial_` may
# appear in a PNG's config; any other key of this `_name_` shape is refused wherever it is.
_DUNDER = re.compile(r"^_.*_$")
_SCHEDULER_KEYS = ("_target_", "_partial_")
# Switches that widen what a run may do rather than what it draws: the PNG may not turn them on;
# only the person at the command line may (e.g. `allow_pickle=true`, for weights they trust).
COMMAND_LINE_ONLY = {"allow_pickle": False}



def scheduler_targets() -> Set[str]:
    """Every `_target_` of the project's own `scheduler` group options (conf/scheduler/*.yaml)."""
    targets = set()
    for option in sorted((Path(config_dir()) / "scheduler").glob("*.yaml")):
        target = OmegaConf.load(option).get("_target_")
        if isinstance(target, str):
            targets.add(target)
    return targets


def config_groups() -> Set[str]:
    """Names of the config groups (conf/ folders) and of the schema's sections: not keys to set."""
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
        problems = list(unsafe_values(data, ()))
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


def unsafe_values(node: Any, path: Tuple[str, ...]) -> Iterator[str]:
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
            yield from unsafe_values(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from unsafe_values(value, (*path, f"[{index}]"))
    elif isinstance(node, str):
        if "${" in node:
            yield (f"{where}={node!r} holds an interpolation (${{...}}), which could read environment "
                   "variables or files; the metadata of lcm-run holds resolved values only")
    elif isinstance(node, float):
        if not math.isfinite(node):
            yield f"{where}={node!r} is not a finite number"
    elif node is not None and not isinstance(node, (bool, int)):
        yield f"{where} has a value of type {type(node).__name__}"


def check_root(data: Dict[str, Any], origin: str) -> None:
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


def check_command_line_only(data: Any, overrides: Sequence[str], origin: str) -> None:
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


def image_entry(record: Dict[str, Any], origin: str) -> Dict[str, Any]:
    image = record.get("image")
    ok = (isinstance(image, dict) and isinstance(image.get("index"), int) and not isinstance(image["index"], bool)
          and isinstance(image.get("seed"), int) and not isinstance(image["seed"], bool) and image["index"] >= 0)
    if not ok:
        raise UserError(f"{origin} does not say which image of its job this is (image.index and image.seed): "
                        "it was edited, or written by another tool. Use an untouched PNG of the job.")
    return image


def check_seed(image: Dict[str, Any], cfg: DictConfig, origin: str) -> None:
    expected = int(cfg.sampling.seed) + image["index"]
    if image["seed"] != expected or image["index"] >= int(cfg.sampling.num_images):
        raise UserError(
            f"{origin} is inconsistent: it calls itself image {image['index']} with seed {image['seed']}, "
            f"but its config (sampling.seed={cfg.sampling.seed}, sampling.num_images={cfg.sampling.num_images}) "
            "makes no such image. It was edited; reproduce from an untouched PNG of the job."
        )
