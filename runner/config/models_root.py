"""A models folder as AUTOMATIC1111 or ComfyUI keep one (`paths.models=DIR` or LCM_RUNNER_MODELS),
so that a weight reference may be a bare file or folder name: `model.source=juggernautXL.safetensors`.

`paths.models` names it, or else the environment variable. Recognised by its subfolders, in DIR itself or in DIR/models:
A1111 `Stable-diffusion`, `Lora`, `ControlNet`, `VAE`; ComfyUI `checkpoints`, `loras`, `controlnet`,
`vae`. A name is looked for in its kind's folder and the folders below it (both UIs allow them); a
name found twice, or not at all, is an error listing the candidates. Torch-free.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from runner.config.plan_memo import memoized
from runner.errors import UserError

ENV_VAR = "LCM_RUNNER_MODELS"
KINDS = ("checkpoint", "lora", "controlnet", "vae")
LAYOUTS: Dict[str, Dict[str, str]] = {
    "A1111": {"checkpoint": "Stable-diffusion", "lora": "Lora", "controlnet": "ControlNet", "vae": "VAE"},
    "ComfyUI": {"checkpoint": "checkpoints", "lora": "loras", "controlnet": "controlnet", "vae": "vae"},
}
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
# The config key a reference comes from -> the kind of model it names.
KIND_OF_KEY = {"model.source": "checkpoint", "model.vae": "vae", "conditioning.model.source": "controlnet"}
SHOWN = 20  # candidates an error lists at most


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str  # as a reference names it: the file or folder name
    path: Path
    size: int  # bytes (a folder: its files together)


@dataclass(frozen=True)
class ModelsRoot:
    root: Path
    layout: str  # "A1111" or "ComfyUI"
    folders: Tuple[Tuple[str, Path], ...]  # kind -> its folder, for the kinds present

    def folder(self, kind: str) -> Optional[Path]:
        return dict(self.folders).get(kind)

    def entries(self, kind: str) -> List[Entry]:
        """The models of a kind: weight files, and diffusers folders (a folder with a config)."""
        folder = self.folder(kind)
        if folder is None:
            return []
        found = []
        for current, subfolders, files in os.walk(folder, followlinks=True):
            here = Path(current)
            if here != folder and _is_diffusers_folder(here):
                found.append(Entry(kind, here.name, here, _folder_size(here)))
                subfolders[:] = []  # its parts are not models of their own
                continue
            subfolders.sort()
            for name in sorted(files):
                if name.lower().endswith(WEIGHT_SUFFIXES):
                    found.append(Entry(kind, name, here / name, (here / name).stat().st_size))
        return found

    def find(self, key: str, ref: str, kind: str) -> Path:
        """The file or folder a bare name means, or a UserError listing the candidates."""
        entries = self.entries(kind)
        matches = [e for e in entries if e.name == ref] or [e for e in entries if Path(e.name).stem == ref]
        if len(matches) == 1:
            return matches[0].path
        where = self.folder(kind) or self.root
        if matches:
            listed = ", ".join(str(e.path) for e in matches)
            raise UserError(f"{key}={ref!r} is ambiguous: {len(matches)} {kind} models in {where} have that name "
                            f"({listed}). Write the path of the one you mean, or the name with its subfolder.")
        names = [str(e.path.relative_to(where)) for e in entries]
        shown = ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
        raise UserError(f"{key}={ref!r}: no {kind} model of that name in {where} (the models folder "
                        f"{self.root}, {self.layout} layout). "
                        + (f"Candidates: {shown}." if names else f"That folder holds no {kind} models.")
                        + " Check the name, or give a path or a hub id.")


@memoized
def open_root(key: str, value: str) -> ModelsRoot:
    """The models folder `value` (from `key`), in either layout, or a UserError saying what it lacks."""
    given = Path(value).expanduser()
    if not given.is_dir():
        raise UserError(f"{key}={value!r} is not a folder. Point it at an AUTOMATIC1111 or ComfyUI models "
                        "folder (the one holding Stable-diffusion/ and Lora/, or checkpoints/ and loras/).")
    for root in (given, given / "models"):
        for layout, names in LAYOUTS.items():
            folders = tuple((kind, root / name) for kind, name in names.items() if (root / name).is_dir())
            if any(kind in ("checkpoint", "lora") for kind, _ in folders):
                return ModelsRoot(root.resolve(), layout, tuple((k, p.resolve()) for k, p in folders))
    expected = "; ".join(f"{layout}: {', '.join(names.values())}" for layout, names in LAYOUTS.items())
    raise UserError(f"{key}={value!r} is not a models folder: neither it nor its models/ subfolder holds the "
                    f"folders of a known layout ({expected}). Point it at the folder that holds them.")


def is_bare_name(ref: str) -> bool:
    """A name without any folder in it, which is not a file in the working folder."""
    return bool(ref) and "/" not in ref and os.sep not in ref and ref not in (".", "..") \
        and not ref.startswith("~") and not Path(ref).exists()


def models_root_of(cfg) -> Optional[ModelsRoot]:
    """The models folder a config names (`paths.models`, else $LCM_RUNNER_MODELS), if any."""
    value = cfg.paths.get("models")
    if value not in (None, ""):
        return open_root("paths.models", str(value))
    value = os.environ.get(ENV_VAR)
    return open_root(ENV_VAR, value) if value else None


@memoized  # a sweep names the same model in every job: its folder is searched once
def resolve_name(root: Optional[ModelsRoot], key: str, ref: str) -> str:
    """`ref` unchanged, or the path of the model a bare name (or a name with its subfolder, as
    `sdxl/juggernautXL.safetensors`) means in the models folder. Paths that exist come first."""
    kind = "lora" if key.startswith("lora.") else KIND_OF_KEY.get(key)
    if root is None or kind is None or not isinstance(ref, str) or Path(ref).expanduser().exists():
        return ref
    folder = root.folder(kind)
    if folder is not None and "/" in ref and (folder / ref).exists():  # a name with its subfolder
        return str(folder / ref)
    return str(root.find(key, ref, kind)) if is_bare_name(ref) else ref


def _is_diffusers_folder(folder: Path) -> bool:
    return (folder / "model_index.json").is_file() or (folder / "config.json").is_file()


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
