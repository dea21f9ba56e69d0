"""The tiny zoo: layout, loadability with the real diffusers loaders, determinism, and that every
conditioning knob (prompt, LoRAs, ControlNet, T2I-Adapter, inpainting mask) visibly matters."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from runner import zoo

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a papercut fox in a forest"
MIN_CHANGE = 5.0  # mean absolute difference, uint8 levels


@pytest.fixture(scope="session")
def zoo_path(tiny_zoo) -> Path:
    """The session's zoo (conftest builds it with zoo.ensure_zoo, in a folder of its own); the
    determinism test compares it with the zoo that `python -m runner.zoo` builds."""
    return tiny_zoo


@pytest.fixture(scope="session")
def cli_runs(tmp_path_factory):
    """Two concurrent `python -m runner.zoo --out DIR` on one (relative) DIR: one builds, the
    other waits for the lock and finds the zoo complete."""
    workdir = tmp_path_factory.mktemp("cli")
    command = [sys.executable, "-m", "runner.zoo", "--out", "zoo"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    processes = [
        subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr
    return workdir / "zoo", outputs


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _lcm(pipe):
    from diffusers import LCMScheduler

    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _render(pipe, prompt=PROMPT, **kwargs) -> np.ndarray:
    image = pipe(
        prompt,
        num_inference_steps=4,
        guidance_scale=0.0,
        height=zoo.TINY_HEIGHT,
        width=zoo.TINY_WIDTH,
        generator=torch.Generator("cpu").manual_seed(0),
        **kwargs,
    ).images[0]
    return np.asarray(image.convert("RGB")).astype(np.float32)


def _change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def _canny(path: Path) -> Image.Image:
    edges = cv2.Canny(np.array(Image.open(path)), 100, 200)
    return Image.fromarray(np.stack([edges] * 3, axis=-1))


@pytest.fixture(scope="session")
def base_pipe(zoo_path):
    from diffusers import DiffusionPipeline

    return _lcm(DiffusionPipeline.from_pretrained(zoo_path / "sdxl-base"))


@pytest.fixture
def fresh_base_pipe(zoo_path):
    """A base pipeline of its own, for tests that load LoRAs into it."""
    from diffusers import DiffusionPipeline

    return _lcm(DiffusionPipeline.from_pretrained(zoo_path / "sdxl-base"))


@pytest.fixture(scope="session")
def base_image(base_pipe) -> np.ndarray:
    return _render(base_pipe)


# --- locating and building ---------------------------------------------------------------------


def test_zoo_dir_honours_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("LCM_RUNNER_ZOO", str(tmp_path / "elsewhere"))
    assert zoo.zoo_dir() == tmp_path / "elsewhere"


def test_zoo_dir_defaults_to_versioned_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("LCM_RUNNER_ZOO", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert zoo.zoo_dir() == tmp_path / "lcm-runner" / f"tiny-zoo-v{zoo.ZOO_VERSION}"


def test_import_does_not_load_torch():
    code = "import sys, runner.zoo; print('torch' in sys.modules or 'diffusers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "False"


def test_cli_prints_only_the_absolute_path(cli_runs):
    path, outputs = cli_runs
    for stdout, _ in outputs:
        assert stdout == f"{path}\n"


def test_concurrent_cli_runs_build_once(cli_runs):
    path, outputs = cli_runs
    assert sum("built in" in stderr for _, stderr in outputs) == 1
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".zoo.tmp-")] == []


def test_build_is_deterministic(zoo_path, cli_runs):
    cli_path, _ = cli_runs  # built in another process, so hash randomisation differs too
    assert _tree_hashes(cli_path) == _tree_hashes(zoo_path)


def test_manifest_lists_every_file(zoo_path):
    manifest = json.loads((zoo_path / zoo.MANIFEST_NAME).read_text())
    hashes = _tree_hashes(zoo_path)
    del hashes[zoo.MANIFEST_NAME]
    assert manifest == {"zoo_version": zoo.ZOO_VERSION, "files": hashes}


def test_ensure_zoo_returns_complete_zoo_without_rebuilding(cli_runs):
    path, _ = cli_runs
    manifest_mtime = (path / zoo.MANIFEST_NAME).stat().st_mtime_ns
    assert zoo.ensure_zoo(path) == path
    assert (path / zoo.MANIFEST_NAME).stat().st_mtime_ns == manifest_mtime


def test_ensure_zoo_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        zoo.ensure_zoo(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


# --- layout and loading ------------------------------------------------------------------------


def test_layout(zoo_path):
    for folder in ("sdxl-base", "sdxl-inpaint"):
        for part in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2",
                     "scheduler"):
            assert (zoo_path / folder / part).is_dir(), f"{folder}/{part}"
        assert (zoo_path / folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (zoo_path / "lcm-lora-sdxl" / "pytorch_lora_weights.safetensors").is_file()
    assert (zoo_path / "papercut" / "papercut.safetensors").is_file()
    assert (zoo_path / "tcd-lora-sdxl" / "pytorch_lora_weights.safetensors").is_file()
    for name in ("inpaint.png", "inpaint_mask.png", "vermeer.png", "canny_source.png", "img2img-init.png"):
        image = Image.open(zoo_path / "images" / name)
        assert image.size == (512, 512)
        assert image.mode in ("RGB", "L")


def test_pipelines_load(zoo_path):
    from diffusers import (
        DiffusionPipeline,
        StableDiffusionXLInpaintPipeline,
        StableDiffusionXLPipeline,
    )

    base = DiffusionPipeline.from_pretrained(zoo_path / "sdxl-base")
    assert isinstance(base, StableDiffusionXLPipeline)
    assert base.unet.config.in_channels == 4
    assert base.scheduler.config.timestep_spacing == "leading"
    inpaint = DiffusionPipeline.from_pretrained(zoo_path / "sdxl-inpaint")
    assert isinstance(inpaint, StableDiffusionXLInpaintPipeline)
    assert inpaint.unet.config.in_channels == 9
    assert inpaint.config.requires_aesthetics_score is False
    assert inpaint.config.force_zeros_for_empty_prompt is True


def test_tokenizers_load(zoo_path):
    from transformers import CLIPTokenizer

    for name in ("tokenizer", "tokenizer_2"):
        tokenizer = CLIPTokenizer.from_pretrained(zoo_path / "sdxl-base" / name)
        assert tokenizer.model_max_length == 77
        ids = tokenizer("the weather").input_ids
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert tokenizer.convert_ids_to_tokens(ids[1]) == "th"  # a merge applies


def test_controlnet_and_adapter_load(zoo_path):
    from diffusers import ControlNetModel, T2IAdapter

    controlnet = ControlNetModel.from_pretrained(zoo_path / "controlnet-canny-sdxl")
    assert controlnet.config.addition_embed_type == "text_time"
    adapter = T2IAdapter.from_pretrained(zoo_path / "t2i-adapter-canny-sdxl")
    assert adapter.config.adapter_type == "full_adapter_xl"
    assert adapter.config.downscale_factor == 16


def test_lora_key_formats(zoo_path):
    lcm = load_file(zoo_path / "lcm-lora-sdxl" / "pytorch_lora_weights.safetensors")
    assert "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight" in lcm
    assert all(k.startswith("unet.") and k.endswith((".lora_A.weight", ".lora_B.weight"))
               for k in lcm)
    papercut = load_file(zoo_path / "papercut" / "papercut.safetensors")
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" \
        in papercut
    assert all(k.startswith("lora_unet_") for k in papercut)
    assert {k.split(".", 1)[1] for k in papercut} == {"lora_down.weight", "lora_up.weight", "alpha"}


# --- every knob matters ------------------------------------------------------------------------


def test_base_image_is_not_degenerate(base_image):
    assert np.isfinite(base_image).all()
    assert base_image.std() > 10
    assert ((base_image == 0) | (base_image == 255)).mean() < 0.05


def test_prompt_changes_image(base_pipe, base_image):
    assert _change(base_image, _render(base_pipe, "a photo of a red car")) > 1.0


LORAS = {
    "lcm": ("lcm-lora-sdxl", "pytorch_lora_weights.safetensors"),
    "papercut": ("papercut", "papercut.safetensors"),
    "tcd": ("tcd-lora-sdxl", "pytorch_lora_weights.safetensors"),
}


@pytest.mark.parametrize("name", LORAS)
def test_lora_changes_image(zoo_path, fresh_base_pipe, name):
    folder, weight_name = LORAS[name]
    fresh_base_pipe.load_lora_weights(zoo_path / folder, weight_name=weight_name, adapter_name=name)
    fresh_base_pipe.set_adapters([name], [0.0])
    off = _render(fresh_base_pipe)
    fresh_base_pipe.set_adapters([name], [1.0])
    assert _change(off, _render(fresh_base_pipe)) >= MIN_CHANGE


@pytest.mark.parametrize("name", LORAS)
def test_lora_with_zero_up_matrices_changes_nothing(zoo_path, fresh_base_pipe, base_image,
                                                     tmp_path, name):
    folder, weight_name = LORAS[name]
    tensors = load_file(zoo_path / folder / weight_name)
    zeroed = {k: torch.zeros_like(v) if "lora_B" in k or "lora_up" in k else v
              for k, v in tensors.items()}
    save_file(zeroed, tmp_path / weight_name)
    fresh_base_pipe.load_lora_weights(tmp_path, weight_name=weight_name, adapter_name=name)
    fresh_base_pipe.set_adapters([name], [1.0])
    assert np.array_equal(_render(fresh_base_pipe), base_image)


def test_controlnet_changes_image(zoo_path, base_pipe):
    from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline

    controlnet = ControlNetModel.from_pretrained(zoo_path / "controlnet-canny-sdxl")
    pipe = StableDiffusionXLControlNetPipeline.from_pipe(base_pipe, controlnet=controlnet)
    canny = _canny(zoo_path / "images" / "vermeer.png")
    off = _render(pipe, image=canny, controlnet_conditioning_scale=0.0)
    on = _render(pipe, image=canny, controlnet_conditioning_scale=1.0)
    assert _change(off, on) >= MIN_CHANGE


def test_t2i_adapter_changes_image(zoo_path, base_pipe):
    from diffusers import StableDiffusionXLAdapterPipeline, T2IAdapter

    adapter = T2IAdapter.from_pretrained(zoo_path / "t2i-adapter-canny-sdxl")
    pipe = StableDiffusionXLAdapterPipeline.from_pipe(base_pipe, adapter=adapter)
    canny = _canny(zoo_path / "images" / "canny_source.png")
    off = _render(pipe, image=canny, adapter_conditioning_scale=0.0)
    on = _render(pipe, image=canny, adapter_conditioning_scale=1.0)
    assert _change(off, on) >= MIN_CHANGE


def test_inpainting_mask_changes_image(zoo_path):
    from diffusers import DiffusionPipeline

    pipe = _lcm(DiffusionPipeline.from_pretrained(zoo_path / "sdxl-inpaint"))
    image = Image.open(zoo_path / "images" / "inpaint.png")
    mask = Image.open(zoo_path / "images" / "inpaint_mask.png")
    inverted = Image.eval(mask, lambda value: 255 - value)
    first = _render(pipe, image=image, mask_image=mask)
    second = _render(pipe, image=image, mask_image=inverted)
    assert _change(first, second) >= MIN_CHANGE
