"""The tiny zoo laid out as a Hugging Face cache (`python -m runner.zoo --as-hub-cache DIR`): every
twin under the real repository id it stands in for, as huggingface_hub lays a download out —
`models--owner--name/` with `blobs/` (files by hash), `refs/main` (a commit id) and
`snapshots/<commit>/` (links into blobs) — with the `fp16` variant files where the real repositories
have them, the papercut LoRA under its real file name, and the card's input images as the files
their URLs name, so that `…/resolve/main/…` URLs resolve through the cache offline. With
HF_HUB_CACHE=DIR and HF_HUB_OFFLINE=1, the default `zoo=hub` runs on the twins by the very path real
weights take."""
from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Tuple

# Weight files of a diffusers folder and their fp16 variant's name (diffusers' naming).
_WEIGHTS = {"diffusion_pytorch_model.safetensors": "diffusion_pytorch_model.fp16.safetensors",
            "model.safetensors": "model.fp16.safetensors"}
_LFS = (".safetensors", ".bin", ".png", ".jpg")  # stored by their sha256, as the hub stores LFS files


@dataclass(frozen=True)
class Repo:
    repo_id: str
    twin: str  # the zoo folder (or file) it stands in for
    repo_type: str = "model"
    fp16: bool = False  # the real repository has fp16 variant files
    files: Dict[str, str] = field(default_factory=dict)  # path in the repo -> path in the zoo (else: the twin's tree)


REPOS: Tuple[Repo, ...] = (
    Repo("stabilityai/stable-diffusion-xl-base-1.0", "sdxl-base", fp16=True),
    Repo("diffusers/stable-diffusion-xl-1.0-inpainting-0.1", "sdxl-inpaint", fp16=True),
    Repo("latent-consistency/lcm-lora-sdxl", "lcm-lora-sdxl"),
    Repo("TheLastBen/Papercut_SDXL", "papercut"),
    Repo("h1t/TCD-SDXL-LoRA", "tcd-lora-sdxl"),
    Repo("diffusers/controlnet-canny-sdxl-1.0-small", "controlnet-canny-sdxl", fp16=True),
    Repo("TencentARC/t2i-adapter-canny-sdxl-1.0", "t2i-adapter-canny-sdxl", fp16=True),
    Repo("stable-diffusion-v1-5/stable-diffusion-v1-5", "sd15-base", fp16=True),
    Repo("stable-diffusion-v1-5/stable-diffusion-inpainting", "sd15-inpaint"),
    Repo("latent-consistency/lcm-lora-sdv1-5", "lcm-lora-sdv1-5"),
    Repo("lllyasviel/control_v11p_sd15_canny", "controlnet-canny-sd15"),
    Repo("segmind/SSD-1B", "ssd-1b", fp16=True),
    Repo("latent-consistency/lcm-lora-ssd-1b", "lcm-lora-ssd-1b"),
    Repo("madebyollin/sdxl-vae-fp16-fix", "sdxl-vae-fp16-fix"),
    Repo("madebyollin/taesdxl", "taesdxl"),
    Repo("openai/clip-vit-large-patch14", "clip-vit-large-patch14"),
    Repo("yuvalkirstain/PickScore_v1", "clip-vit-large-patch14"),
    Repo("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "clip-vit-large-patch14"),
    Repo("huggingface/documentation-images", "images", repo_type="dataset", files={
        "diffusers/inpaint.png": "images/inpaint.png",
        "diffusers/inpaint_mask.png": "images/inpaint_mask.png",
        "diffusers/input_image_vermeer.png": "images/vermeer.png",
        "diffusers/img2img-init.png": "images/img2img-init.png",
    }),
    # The twin is a PNG; Pillow reads an image by its content, whatever the name says.
    Repo("Adapter/t2iadapter", "images", files={"figs_SDXLV1.0/org_canny.jpg": "images/canny_source.png"}),
)


def lay_out_hub_cache(zoo: Path, dest: Path) -> Path:
    """Write the cache into `dest` (created; the repositories in it replaced) and return it."""
    zoo, dest = Path(zoo), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for repo in REPOS:
        _lay_out_repo(repo, _repo_files(zoo, repo), dest)
    return dest


def repo_folder(dest: Path, repo_id: str, repo_type: str = "model") -> Path:
    """huggingface_hub's folder name for a repository in a cache."""
    return Path(dest) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def _repo_files(zoo: Path, repo: Repo) -> Dict[str, bytes]:
    """Each file of the repository, by its path there: the twin's files, plus fp16 variants."""
    if repo.files:
        return {name: (zoo / source).read_bytes() for name, source in repo.files.items()}
    root = zoo / repo.twin
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    if repo.fp16:
        for name in list(files):
            folder, _, base = name.rpartition("/")
            if base in _WEIGHTS:
                files[f"{folder}/{_WEIGHTS[base]}".lstrip("/")] = _fp16_bytes(root / name)
    return files


def _fp16_bytes(path: Path) -> bytes:
    from safetensors import safe_open
    from safetensors.torch import save

    from runner.zoo.precision import as_half

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    return save(as_half(tensors), metadata=metadata)


def _lay_out_repo(repo: Repo, files: Dict[str, bytes], dest: Path) -> None:
    folder = repo_folder(dest, repo.repo_id, repo.repo_type)
    if folder.exists():
        shutil.rmtree(folder)
    # A commit id that follows the content, as a real one does.
    listing = hashlib.sha1()
    for name in sorted(files):
        listing.update(f"{name}\0{hashlib.sha256(files[name]).hexdigest()}\n".encode())
    commit = listing.hexdigest()
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "blobs").mkdir()
    snapshot = folder / "snapshots" / commit
    for name, content in files.items():
        blob = folder / "blobs" / _etag(name, content)
        if not blob.exists():
            blob.write_bytes(content)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)  # relative, as huggingface_hub links


def _etag(name: str, content: bytes) -> str:
    """The blob's name: the sha256 of an LFS file, the git blob id of any other."""
    if name.endswith(_LFS):
        return hashlib.sha256(content).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
