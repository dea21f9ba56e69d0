"""Tiny zoo: deterministic, locally generated stand-ins for the SDXL weights the runner uses.

Every model has the real SDXL architecture (only narrower) and is saved in the real on-disk
format, so the diffusers code that loads real weights loads these unchanged, offline, on CPU:

    <zoo>/sdxl-base/               StableDiffusionXLPipeline folder
    <zoo>/sdxl-inpaint/            StableDiffusionXLInpaintPipeline folder (9-channel UNet)
    <zoo>/lcm-lora-sdxl/           LCM-LoRA twin, diffusers/peft keys
    <zoo>/papercut/                style LoRA twin, kohya keys
    <zoo>/controlnet-canny-sdxl/   ControlNetModel folder
    <zoo>/t2i-adapter-canny-sdxl/  T2IAdapter folder (full_adapter_xl)
    <zoo>/images/                  procedurally drawn input images

torch and diffusers are imported inside the build functions so that `zoo_dir()` stays instant.
`python -m runner.zoo [--rebuild] [--out DIR]` prints the zoo folder, building it if needed.
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

ZOO_VERSION = "2"  # 2: the fp16-fix VAE and TAESD-XL twins
# One 4-step LCM text-to-image job (1 image, VAE decode included) takes about 0.4-0.6 s at this
# size on a 2-core CPU. Any size the XL T2I-Adapter takes must be a multiple of 16 (it
# pixel-unshuffles by 16); SDXL pipelines alone need multiples of 8.
TINY_HEIGHT = 256
TINY_WIDTH = 256

MANIFEST_NAME = "zoo_manifest.json"  # written last: its presence marks a complete zoo
ENV_VAR = "LCM_RUNNER_ZOO"

# SDXL's layout, narrowed so that a CPU runs a job in well under a second. Cross-attention
# width is the two text encoders' widths together, as in SDXL (768 + 1280 = 2048).
UNET_CHANNELS = (32, 64, 128)  # SDXL: (320, 640, 1280)
UNET_HEADS = (2, 4, 8)  # SDXL's attention_head_dim (5, 10, 20) is a head count: width / 64
UNET_TRANSFORMER_LAYERS = (1, 1, 2)  # SDXL: (1, 2, 10)
ADDITION_TIME_EMBED_DIM = 8  # SDXL: 256; six size/crop numbers are embedded
VAE_CHANNELS = (32, 64, 64, 64)  # SDXL: (128, 256, 512, 512); the decoder dominates the cost
TEXT_ENCODER_WIDTH = 32  # SDXL: 768
TEXT_ENCODER_2_WIDTH = 64  # SDXL: 1280; also its projection dim, as in SDXL
# Default init predicts noise with std ~0.3 that barely depends on the prompt; a trained UNet
# predicts unit-variance noise. Scaling the output and the two text paths (cross-attention values,
# pooled-embedding MLP) makes different prompts give visibly different images.
UNET_WEIGHT_SCALES = {"conv_out": 4.0, "attn2.to_v": 4.0, "add_embedding.linear_1": 4.0}
CONTROLNET_EMBEDDING_CHANNELS = (8, 16, 32, 64)  # SDXL: (16, 32, 96, 256)

# stabilityai/stable-diffusion-xl-base-1.0/scheduler/scheduler_config.json
SDXL_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "prediction_type": "epsilon",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "sample_max_value": 1.0,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
}

# Every Linear layer inside SDXL's Transformer2D blocks.
TRANSFORMER_LINEARS = (
    "proj_in", "proj_out", "to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"
)
# Std of the LoRA up matrices and of the ControlNet's (normally zero-initialised) output
# convolutions: large enough that each visibly changes the image.
LCM_UP_STD = 0.05
PAPERCUT_UP_STD = 0.45
CONTROLNET_STD = 0.05
# Real adapters' features are strong; default init leaves them too weak to show.
ADAPTER_INPUT_SCALE = 12.0

IMAGE_SIZE = 512
# Common English letter pairs: each becomes a mid-word and an end-of-word BPE merge.
TOKENIZER_PAIRS = (
    "th he in er an re on at en nd ti es or te of ed is it al ar st to nt ng se ha as ou io "
    "le ve co me de hi ri ro ic ne ea ra ce li ch ll be ma si om ur ca el ta la ns ge ly ei"
).split()


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

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with torch.no_grad():
        base = _build_base_components(dest)
        _build_inpaint_pipeline(dest / "sdxl-inpaint", base)
        _build_lcm_lora(dest / "lcm-lora-sdxl", base["unet"])
        _build_papercut_lora(dest / "papercut", base["unet"])
        _build_controlnet(dest / "controlnet-canny-sdxl", base["unet"])
        _build_t2i_adapter(dest / "t2i-adapter-canny-sdxl")
        _vae(seed=8, force_upcast=False).save_pretrained(dest / "sdxl-vae-fp16-fix")
        _tiny_autoencoder().save_pretrained(dest / "taesdxl")
    _draw_images(dest / "images")
    _write_manifest(dest)
    _log(f"built in {time.perf_counter() - started:.1f}s")


# --- completeness, locking, atomic replacement -------------------------------------------------


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


# --- pipelines ---------------------------------------------------------------------------------


def _seeded(seed: int) -> None:
    """Seed torch's global RNG, which diffusers and transformers use to initialise weights."""
    import torch

    torch.manual_seed(seed)


def _build_base_components(dest: Path) -> dict:
    from diffusers import StableDiffusionXLPipeline

    components = {
        "unet": _unet(),
        "vae": _vae(),
        "scheduler": _scheduler(),
        **_text_encoders(),
    }
    pipe = StableDiffusionXLPipeline(**components, force_zeros_for_empty_prompt=True)
    pipe.save_pretrained(dest / "sdxl-base")
    _write_tokenizers(dest / "sdxl-base")
    return components


def _build_inpaint_pipeline(folder: Path, base: dict) -> None:
    """Like diffusers/stable-diffusion-xl-1.0-inpainting-0.1, whose UNet starts from the base."""
    from diffusers import StableDiffusionXLInpaintPipeline

    components = {**base, "unet": _inpaint_unet(base["unet"])}
    pipe = StableDiffusionXLInpaintPipeline(
        **components, requires_aesthetics_score=False, force_zeros_for_empty_prompt=True
    )
    pipe.save_pretrained(folder)
    _write_tokenizers(folder)


def _unet_config(in_channels: int = 4) -> dict:
    return {
        "sample_size": TINY_HEIGHT // 8,  # pipelines default to sample_size * 8 pixels
        "in_channels": in_channels,
        "out_channels": 4,
        "layers_per_block": 2,
        "block_out_channels": UNET_CHANNELS,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": UNET_HEADS,
        "transformer_layers_per_block": UNET_TRANSFORMER_LAYERS,
        "use_linear_projection": True,
        "cross_attention_dim": TEXT_ENCODER_WIDTH + TEXT_ENCODER_2_WIDTH,
        "addition_embed_type": "text_time",
        "addition_embed_type_num_heads": 64,
        "addition_time_embed_dim": ADDITION_TIME_EMBED_DIM,
        "projection_class_embeddings_input_dim": 6 * ADDITION_TIME_EMBED_DIM + TEXT_ENCODER_2_WIDTH,
    }


def _unet():
    from diffusers import UNet2DConditionModel

    _seeded(1)
    unet = UNet2DConditionModel(**_unet_config())
    _scale_weights(unet, UNET_WEIGHT_SCALES)
    return unet


def _scale_weights(model, scales: dict[str, float]) -> None:
    for name, module in model.named_modules():
        for suffix, factor in scales.items():
            if name.endswith(suffix):
                module.weight.mul_(factor)


def _inpaint_unet(base_unet):
    import torch
    from diffusers import UNet2DConditionModel

    # Base weights, plus fresh input channels for the mask and the masked image's latents.
    _seeded(2)
    unet = UNet2DConditionModel(**_unet_config(in_channels=9))
    extra_inputs = unet.conv_in.weight[:, 4:].clone()
    state = base_unet.state_dict()
    state["conv_in.weight"] = torch.cat([state["conv_in.weight"], extra_inputs], dim=1)
    unet.load_state_dict(state)
    return unet


def _vae(seed: int = 3, force_upcast: bool = True):
    """SDXL's VAE, tiny. With force_upcast=False: like madebyollin/sdxl-vae-fp16-fix, a VAE whose
    config lets pipelines decode in float16 (the real one is finetuned not to overflow there)."""
    from diffusers import AutoencoderKL

    _seeded(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=VAE_CHANNELS,
        layers_per_block=1,
        latent_channels=4,
        sample_size=TINY_HEIGHT,
        scaling_factor=0.13025,  # SDXL's VAE
        force_upcast=force_upcast,
    )


def _tiny_autoencoder():
    """Like madebyollin/taesdxl: diffusers' AutoencoderTiny, a fast preview decoder for SDXL
    latents (four decoder levels: x8, as the real one), with narrower layers."""
    from diffusers import AutoencoderTiny

    _seeded(9)
    return AutoencoderTiny(encoder_block_out_channels=(16, 16, 16, 16), decoder_block_out_channels=(16, 16, 16, 16),
                           num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1), latent_channels=4)


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    # from_config keeps the keys Euler ignores, as loading the real folder does.
    return EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG)


# --- text encoders and tokenizers --------------------------------------------------------------


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP byte-to-unicode table, in CLIP's vocabulary order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def _merges() -> list[tuple[str, str]]:
    return [(a, b + suffix) for a, b in TOKENIZER_PAIRS for suffix in ("", "</w>")]


def _vocab() -> dict[str, int]:
    """CLIP's layout: bytes, bytes + '</w>', one token per merge, then the two specials."""
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in _merges()]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def _write_tokenizers(pipeline_dir: Path) -> None:
    """Write both CLIP tokenizers as the SDXL repo ships them (vocab.json, merges.txt, configs).

    Written by hand rather than by save_pretrained, whose output varies across versions.
    """
    for name, pad_token in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):
        folder = pipeline_dir / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        (folder / "vocab.json").write_text(json.dumps(_vocab(), ensure_ascii=False) + "\n")
        merges = "".join(f"{a} {b}\n" for a, b in _merges())
        (folder / "merges.txt").write_text("#version: 0.2\n" + merges)
        specials = {
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "pad_token": pad_token,
        }
        config = {
            **specials,
            "tokenizer_class": "CLIPTokenizer",
            "model_max_length": 77,
            "do_lower_case": True,
            "clean_up_tokenization_spaces": True,
            "errors": "replace",
            "add_prefix_space": False,
        }
        _write_json(folder / "special_tokens_map.json", specials)
        _write_json(folder / "tokenizer_config.json", config)


def _text_encoders() -> dict:
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    vocab = _vocab()
    ids = {
        "vocab_size": len(vocab),
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "max_position_embeddings": 77,
    }
    def config(width: int, pad_token: str, activation: str) -> CLIPTextConfig:
        return CLIPTextConfig(**ids, pad_token_id=vocab[pad_token], hidden_size=width,
                              intermediate_size=4 * width, num_attention_heads=4, num_hidden_layers=3,
                              projection_dim=width, hidden_act=activation)

    _seeded(4)
    text_encoder = CLIPTextModel(config(TEXT_ENCODER_WIDTH, "<|endoftext|>", "quick_gelu"))  # as OpenAI CLIP ViT-L
    _seeded(5)
    text_encoder_2 = CLIPTextModelWithProjection(config(TEXT_ENCODER_2_WIDTH, "!", "gelu"))  # as OpenCLIP bigG
    return {
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        # Placeholders for the pipeline constructor; the real files come from _write_tokenizers.
        "tokenizer": CLIPTokenizer(vocab=vocab, merges=_merges()),
        "tokenizer_2": CLIPTokenizer(vocab=vocab, merges=_merges(), pad_token="!"),
    }


# --- LoRAs -------------------------------------------------------------------------------------


def _lora_targets(unet, suffixes: tuple[str, ...]) -> dict:
    """The UNet's Linear/Conv modules whose qualified name ends with one of `suffixes`."""
    return {
        name: module
        for name, module in unet.named_modules()
        if name.endswith(suffixes) and hasattr(module, "weight") and module.weight.dim() in (2, 4)
    }


def _lora_pair(module, rank: int, generator, up_std: float):
    """Random (down, up) factors for one module; up is non-zero so the LoRA changes outputs."""
    import torch

    weight = module.weight
    fan_in = weight[0].numel()
    down_shape = (rank, *weight.shape[1:])
    up_shape = (weight.shape[0], rank, *([1, 1] if weight.dim() == 4 else []))
    down = torch.randn(down_shape, generator=generator) / fan_in**0.5
    up = torch.randn(up_shape, generator=generator) * up_std
    return down.contiguous(), up.contiguous()


def _build_lcm_lora(folder: Path, unet) -> None:
    """The LCM-LoRA twin, written by diffusers itself in the diffusers/peft key format."""
    import torch
    from diffusers import StableDiffusionXLPipeline

    # latent-consistency/lcm-lora-sdxl adapts the transformer blocks and the ResNet layers.
    targets = _lora_targets(unet, (*TRANSFORMER_LINEARS, "conv1", "conv2", "time_emb_proj"))
    generator = torch.Generator().manual_seed(6)
    layers = {}
    for name, module in targets.items():
        down, up = _lora_pair(module, rank=8, generator=generator, up_std=LCM_UP_STD)
        layers[f"{name}.lora_A.weight"] = down
        layers[f"{name}.lora_B.weight"] = up
    StableDiffusionXLPipeline.save_lora_weights(folder, unet_lora_layers=layers)


def _build_papercut_lora(folder: Path, unet) -> None:
    """A community-style SDXL LoRA in kohya's format: transformer Linear layers, rank 4, alpha 2."""
    import torch
    from safetensors.torch import save_file

    targets = _lora_targets(unet, TRANSFORMER_LINEARS)  # kohya's default LoRA targets
    generator = torch.Generator().manual_seed(7)
    rank, alpha = 4, 2.0
    tensors = {}
    for name, module in targets.items():
        down, up = _lora_pair(module, rank=rank, generator=generator, up_std=PAPERCUT_UP_STD)
        key = "lora_unet_" + name.replace(".", "_")
        tensors[f"{key}.lora_down.weight"] = down
        tensors[f"{key}.lora_up.weight"] = up
        tensors[f"{key}.alpha"] = torch.tensor(alpha)
    folder.mkdir(parents=True, exist_ok=True)
    # No kohya ss_* metadata: safetensors writes several entries in a random (hash map) order.
    save_file(tensors, folder / "papercut.safetensors")


# --- ControlNet and T2I-Adapter ----------------------------------------------------------------


def _build_controlnet(folder: Path, unet) -> None:
    """A canny ControlNet initialised from the base UNet, as ControlNet training starts.

    Its zero-initialised output convolutions get small random weights instead, so the control
    image actually steers the tiny base.
    """
    import torch
    from diffusers import ControlNetModel

    _seeded(8)
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=CONTROLNET_EMBEDDING_CHANNELS
    )
    zero_initialised = [
        controlnet.controlnet_cond_embedding.conv_out,
        *controlnet.controlnet_down_blocks,
        controlnet.controlnet_mid_block,
    ]
    generator = torch.Generator().manual_seed(9)
    for conv in zero_initialised:
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * CONTROLNET_STD)
    controlnet.save_pretrained(folder)


def _build_t2i_adapter(folder: Path) -> None:
    from diffusers import T2IAdapter

    _seeded(10)
    adapter = T2IAdapter(
        in_channels=3,
        channels=UNET_CHANNELS,  # one feature map per UNet level
        num_res_blocks=2,
        downscale_factor=16,
        adapter_type="full_adapter_xl",
    )
    adapter.adapter.conv_in.weight.mul_(ADAPTER_INPUT_SCALE)
    adapter.save_pretrained(folder)


# --- input images ------------------------------------------------------------------------------


def _draw_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    drawings = {
        "inpaint.png": _draw_landscape,
        "inpaint_mask.png": _draw_mask,
        "vermeer.png": _draw_portrait,
        "canny_source.png": _draw_figure,
    }
    for name, draw in drawings.items():
        # Fixed PNG options and no metadata: same pixels -> same bytes.
        draw().save(folder / name, format="PNG", optimize=False, compress_level=6)


def _draw_landscape():
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE))
    draw = ImageDraw.Draw(image)
    for y in range(300):  # sky, lighter towards the horizon
        draw.line([(0, y), (IMAGE_SIZE, y)], fill=(70 + y // 3, 130 + y // 4, 230))
    draw.ellipse([360, 60, 440, 140], fill=(255, 220, 90))
    draw.polygon([(0, 300), (140, 150), (270, 290), (380, 170), (512, 300)], fill=(95, 100, 120))
    draw.polygon([(120, 190), (140, 150), (162, 195)], fill=(245, 245, 250))
    draw.rectangle([0, 290, IMAGE_SIZE, IMAGE_SIZE], fill=(70, 150, 60))
    draw.polygon([(200, 512), (250, 300), (270, 300), (330, 512)], fill=(170, 140, 100))
    draw.rectangle([80, 330, 96, 420], fill=(100, 70, 40))
    draw.ellipse([40, 250, 136, 350], fill=(40, 110, 45))
    return image


def _draw_mask():
    from PIL import Image, ImageDraw

    image = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw = ImageDraw.Draw(image)
    draw.ellipse([150, 180, 380, 400], fill=255)
    draw.ellipse([300, 150, 420, 280], fill=255)
    return image


def _draw_portrait():
    """A figure after Vermeer's girl with a pearl earring: dark ground, turban, strong edges."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (20, 25, 22))
    draw = ImageDraw.Draw(image)
    draw.polygon([(110, 512), (170, 380), (350, 370), (430, 512)], fill=(160, 130, 60))
    draw.ellipse([170, 140, 340, 380], fill=(235, 200, 170))
    draw.pieslice([150, 90, 350, 290], 180, 360, fill=(40, 70, 160))
    draw.polygon([(300, 170), (380, 200), (360, 330), (320, 250)], fill=(230, 200, 90))
    draw.ellipse([210, 230, 236, 248], fill=(50, 35, 30))
    draw.ellipse([272, 230, 298, 248], fill=(50, 35, 30))
    draw.line([(254, 250), (246, 300), (262, 304)], fill=(150, 100, 80), width=4)
    draw.arc([220, 300, 290, 345], 20, 160, fill=(170, 60, 60), width=6)
    draw.ellipse([178, 320, 200, 342], fill=(250, 250, 245), outline=(90, 90, 90), width=2)
    return image


def _draw_figure():
    """A standing figure and a house: bold outlines for the canny adapter."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (240, 236, 225))
    draw = ImageDraw.Draw(image)
    ink = (15, 15, 20)
    draw.rectangle([40, 250, 230, 470], outline=ink, width=8)
    draw.polygon([(25, 255), (135, 140), (245, 255)], outline=ink, width=8)
    draw.rectangle([110, 370, 160, 470], fill=(120, 60, 30), outline=ink, width=6)
    draw.ellipse([330, 90, 410, 170], fill=(230, 190, 160), outline=ink, width=6)
    draw.line([(370, 170), (370, 340)], fill=ink, width=10)
    draw.line([(300, 230), (440, 230)], fill=ink, width=10)
    draw.line([(370, 340), (320, 470)], fill=ink, width=10)
    draw.line([(370, 340), (420, 470)], fill=ink, width=10)
    return image


def _write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


# --- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runner.zoo", description="Print the tiny zoo folder, building it if needed."
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild even if present")
    parser.add_argument("--out", type=Path, metavar="DIR", help="use DIR instead of the default")
    args = parser.parse_args(argv)
    # stdout carries only the path; anything a library prints while building goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        path = ensure_zoo(args.out, rebuild=args.rebuild)
    print(path)
    return 0

