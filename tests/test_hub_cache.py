"""The hub path rehearsed offline: the tiny twins laid out as a Hugging Face cache under the real
repo ids (`python -m runner.zoo --as-hub-cache DIR`), read by the default `zoo=hub` exactly as real
weights are, with pixels equal to `zoo=tiny`; a file missing from the cache is named in the error."""
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import constants, scan_cache_dir, snapshot_download
from PIL import Image
from safetensors.torch import load_file

from runner.config.job_plan import plan_job
from runner.errors import UserError
from runner.zoo.hub_cache import REPOS, lay_out_hub_cache, repo_folder
from tests.helpers import CONF, lcm_run, make_config

BASE = "stabilityai/stable-diffusion-xl-base-1.0"


@pytest.fixture(scope="session")
def hub_cache(tiny_zoo, tmp_path_factory):
    return lay_out_hub_cache(tiny_zoo, tmp_path_factory.mktemp("hub") / "hub")


@pytest.fixture
def reading(hub_cache, monkeypatch):
    """This process reads the laid-out cache (huggingface_hub's functions read the constant per call)."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    return hub_cache


@contextlib.contextmanager
def hidden(hub_cache: Path, repo_id: str, name: str, repo_type: str = "model"):
    """A file of a cached snapshot taken away for the block, as if never downloaded."""
    snapshot = next((repo_folder(hub_cache, repo_id, repo_type) / "snapshots").iterdir())
    link = snapshot / name
    away = link.with_name(link.name + ".away")
    link.rename(away)
    try:
        yield
    finally:
        away.rename(link)


def test_the_cache_is_laid_out_as_huggingface_hub_lays_a_download(hub_cache, tiny_zoo):
    info = scan_cache_dir(hub_cache)  # huggingface_hub's own reading of a cache: it refuses malformed ones
    assert not info.warnings
    repos = {(repo.repo_id, repo.repo_type) for repo in info.repos}
    assert repos == {(repo.repo_id, repo.repo_type) for repo in REPOS}
    folder = repo_folder(hub_cache, BASE)
    commit = (folder / "refs" / "main").read_text()
    unet = folder / "snapshots" / commit / "unet"
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"):
        assert (unet / name).is_symlink() and not os.path.isabs(os.readlink(unet / name))
        assert (unet / name).resolve().parent == folder / "blobs"
    # fp16 variant files hold the same values: the twins' weights are exact in float16
    full, half = (load_file(unet / n) for n in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"))
    assert half["conv_in.weight"].dtype == torch.float16 and full.keys() == half.keys()
    assert all(torch.equal(full[k], half[k].to(full[k].dtype)) for k in full)
    papercut = repo_folder(hub_cache, "TheLastBen/Papercut_SDXL") / "snapshots"
    assert (next(papercut.iterdir()) / "papercut.safetensors").read_bytes() == \
        (tiny_zoo / "papercut" / "papercut.safetensors").read_bytes()


def test_every_twin_of_the_tiny_zoo_is_in_the_cache(reading):
    """conf/zoo/tiny.yaml and the cache name the same models and images: each hub id resolves to a
    snapshot, each URL to a cached file."""
    from runner.config import sources

    twins = yaml.safe_load((CONF / "zoo" / "tiny.yaml").read_text())["twins"]
    for ref in twins:
        if ref.startswith("https://"):
            found = sources.resolve_url("conditioning.image", ref)
            assert found != ref and Image.open(found).size == (512, 512), ref
        else:
            assert Path(snapshot_download(ref, local_files_only=True)).is_dir(), ref


def test_a_missing_variant_file_is_named_before_anything_loads(reading):
    with hidden(reading, BASE, "unet/diffusion_pytorch_model.fp16.safetensors"):
        with pytest.raises(UserError) as error:
            plan_job(make_config("experiment=t2i"))
    message = str(error.value)
    assert all(part in message for part in (BASE, "model.variant='fp16'", "unet/*.fp16.safetensors", "hf download"))
    assert plan_job(make_config("experiment=t2i")).variant == "fp16"  # whole again: planned


@pytest.mark.parametrize("experiment, repo, name, repo_type", [
    ("lora_papercut", "TheLastBen/Papercut_SDXL", "papercut.safetensors", "model"),
    ("inpaint", "huggingface/documentation-images", "diffusers/inpaint.png", "dataset"),
])
def test_a_file_missing_from_the_cache_is_named_in_the_error(reading, experiment, repo, name, repo_type):
    with hidden(reading, repo, name, repo_type):
        with pytest.raises(UserError) as error:
            plan_job(make_config(f"experiment={experiment}"))
    assert repo in str(error.value) and name in str(error.value) and "HF_HUB_OFFLINE" in str(error.value)


def _pixels(job: Path) -> np.ndarray:
    record = json.loads((job / "run.json").read_text())
    return np.asarray(Image.open(job / record["images"][0]["file"]).convert("RGB"))


@pytest.mark.slow
def test_the_card_experiments_run_from_the_hub_cache_equal_to_the_tiny_zoo(tiny_zoo, tmp_path):
    """The default zoo=hub, offline, with HF_HUB_CACHE pointing at the laid-out cache (read by
    huggingface_hub at import: hence subprocesses): every card experiment's pixels equal zoo=tiny's."""
    cache = tmp_path / "hf-cache"
    made = subprocess.run([sys.executable, "-m", "runner.zoo", "--as-hub-cache", str(cache)], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert made.returncode == 0 and made.stdout.strip() == str(cache), made.stderr
    env = {"HF_HUB_CACHE": str(cache)}
    size = ("sampling.height=64", "sampling.width=64", "sampling.steps=2")
    sweeps = {"cards": ["experiment=t2i,inpaint,lora_papercut,controlnet_canny", *size],
              "adapter": ["experiment=t2i_adapter_canny", *size, "conditioning.detect_resolution=64"]}
    for name, arguments in sweeps.items():
        done = lcm_run("-m", *arguments, "zoo=hub,tiny", f"hydra.sweep.dir={tmp_path / name}", cwd=tmp_path, env_extra=env)
        assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted((tmp_path / "cards").glob("[0-9]*")) + sorted((tmp_path / "adapter").glob("[0-9]*"))
    records = [json.loads((job / "run.json").read_text()) for job in jobs]
    pairs = [(jobs[i], jobs[i + 1]) for i in range(0, len(jobs), 2)]
    assert len(pairs) == 5
    for (hub_job, tiny_job), hub, tiny in zip(pairs, records[::2], records[1::2]):
        assert (hub["config"]["zoo"]["name"], tiny["config"]["zoo"]["name"]) == ("hub", "tiny")
        assert hub["config"]["model"]["variant"] == "fp16"
        assert all(path.startswith(str(cache)) for path in hub["components"].values()), hub["components"]
        assert all(a["file"].startswith(str(cache)) for a in hub["adapters"])
        assert np.array_equal(_pixels(hub_job), _pixels(tiny_job)), hub["overrides"]
