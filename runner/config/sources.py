"""Where each weight reference of a config lives on disk: a local path, a tiny-zoo twin, or the hub.

Torch-free (huggingface_hub only): it runs while planning, so that a missing file or an uncached
model is reported before anything loads.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from huggingface_hub import constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError

from runner import zoo
from runner.errors import UserError
from runner.config.plan_memo import memoized

DEFAULT_LORA_FILE = "pytorch_lora_weights.safetensors"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# A file of a hub repository by URL: https://huggingface.co/[datasets/|spaces/]owner/name/resolve/REV/PATH
_HUB_URL = re.compile(r"^https?://(?:huggingface\.co|hf\.co)/(?:(datasets|spaces)/)?"
                      r"([\w.-]+/[\w.-]+)/resolve/([^/]+)/(.+)$")
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class Source:
    """A resolved weight reference. `path` is local (folder or file) unless origin is "hub"."""

    key: str  # the config key it came from, e.g. "lora.lcm.source"
    ref: str  # as written in the config
    origin: str  # "local", "zoo" (tiny twin, built on first load) or "hub" (not cached: download)
    path: str  # local folder/file, or the hub id when origin is "hub"
    weight_name: Optional[str] = None  # file inside `path` (LoRA folders and hub repos)

    @property
    def file(self) -> str:
        """The single file a LoRA source points to (or its hub id + name before download)."""
        return str(Path(self.path) / self.weight_name) if self.weight_name else self.path


@memoized
def resolve_folder(key: str, ref: str, twins: Mapping[str, str]) -> Source:
    """A diffusers folder (pipeline, ControlNet, adapter) named by hub id or path."""
    local = _local_or_twin(key, ref, twins)
    if local is not None:
        return local
    try:
        path = snapshot_download(ref, local_files_only=True)
    except LocalEntryNotFoundError:
        _require_online(key, ref)
        return Source(key, ref, "hub", ref)
    return Source(key, ref, "local", path)


@memoized
def resolve_file(key: str, ref: str, weight_name: Optional[str], twins: Mapping[str, str]) -> Source:
    """A single weight file (a LoRA): a file, a folder + weight_name, or a hub repo + weight_name."""
    local = _local_or_twin(key, ref, twins)
    if local is not None:
        if local.origin == "local" and Path(local.path).is_file():
            return local
        name = weight_name or DEFAULT_LORA_FILE
        source = Source(key, ref, local.origin, local.path, name)
        if source.origin == "local" and not Path(source.file).is_file():
            raise UserError(
                f"{key}={ref!r} is a folder without the weight file {name!r} "
                f"(looked for {source.file}). Set {key.rsplit('.', 1)[0]}.weight_name to the "
                "file's name, or point the source at the .safetensors file itself."
            )
        return source
    name = weight_name or DEFAULT_LORA_FILE
    try:
        path = hf_hub_download(ref, name, local_files_only=True)
    except LocalEntryNotFoundError:
        _require_online(key, ref, name)
        return Source(key, ref, "hub", ref, name)
    return Source(key, ref, "local", str(Path(path).parent), name)


def _local_or_twin(key: str, ref: str, twins: Mapping[str, str]) -> Optional[Source]:
    if ref in twins:
        return Source(key, ref, "zoo", str(zoo.zoo_dir() / twins[ref]))
    path = Path(ref).expanduser()
    if path.exists():
        return Source(key, ref, "local", str(path.resolve()))
    if not _HUB_ID.match(ref):
        raise UserError(
            f"{key}={ref!r} does not exist: it is neither a local file or folder nor a hub id "
            "(owner/name). Check the path, or use zoo=tiny to run on the offline tiny weights."
        )
    if twins:
        raise UserError(
            f"{key}={ref!r} has no twin in the tiny zoo and is not a local path. zoo=tiny knows "
            f"{', '.join(sorted(twins))}; use one of those, a local path, or drop zoo=tiny."
        )
    return None


def variant_for(source: Source, variant: Optional[str]) -> Optional[str]:
    """Tiny-zoo twins (and single files) have no fp16 (or other variant) files: their variant is None."""
    return None if source.origin == "zoo" or is_single_file(source) else variant


def is_single_file(source: Source) -> bool:
    """A model in one file (a checkpoint as A1111 and ComfyUI keep them), not a diffusers folder."""
    return source.origin != "hub" and source.weight_name is None and Path(source.path).is_file()


def resolve_url(key: str, url: str) -> str:
    """A hub file named by URL (`…/resolve/main/…`): its copy in the Hugging Face cache, or the URL
    itself to fetch when online; offline and not cached, an error naming the file."""
    found = _HUB_URL.match(url)
    if found is None:
        if offline():
            raise UserError(f"{key}={url!r} is a URL but HF_HUB_OFFLINE is set, so it cannot be fetched. "
                            f"Download it and pass its local path ({key}=/path/to/image.png), or use zoo=tiny.")
        return url
    kind, repo_id, revision, filename = found.groups()
    repo_type = {"datasets": "dataset", "spaces": "space"}.get(kind, "model")
    try:
        return hf_hub_download(repo_id, filename, repo_type=repo_type, revision=revision, local_files_only=True)
    except LocalEntryNotFoundError:
        if not offline():
            return url
    plural = f"{repo_type}s/" if repo_type != "model" else ""
    raise UserError(
        f"{key}={url!r}: {filename} of the {repo_type} repository {repo_id} (revision {revision}) is not in the "
        f"local Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set. Download it on a "
        f"machine with network access (`hf download {repo_id} {filename}"
        f"{' --repo-type ' + repo_type if plural else ''}`), or pass a local copy ({key}=/path/to/image.png)."
    )


def offline() -> bool:
    return constants.is_offline_mode()


def _require_online(key: str, ref: str, name: Optional[str] = None) -> None:
    if not offline():
        return
    what = f"{ref} ({name})" if name else ref
    files = f" --include {name}" if name else ""
    raise UserError(
        f"{key}={ref!r}: {what} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set, "
        f"so it cannot be downloaded. Download it on a machine with network access "
        f"(`hf download {ref}{files}`, then copy {constants.HF_HUB_CACHE}), point {key} at a local "
        "folder, or run on the offline tiny weights with zoo=tiny."
    )

