"""Tiny twins of the model card's other bases: Stable Diffusion 1.5 (one CLIP text encoder, a
four-level UNet; its 9-channel inpainting variant and a canny ControlNet) and SSD-1B (SDXL with
its mid block cut to one ResNet and fewer transformer blocks), each with its LCM-LoRA in the
diffusers/peft key format. Built from the SDXL twins' parts where the real models share them (SSD-1B
keeps SDXL's text encoders, VAE and scheduler). torch and diffusers are imported inside the builders."""
from __future__ import annotations

import shutil
from pathlib import Path

from runner.zoo import TINY_HEIGHT
from runner.zoo.tokenizer import write_tokenizer, write_tokenizers
from runner.zoo.twins import (
    TEXT_ENCODER_WIDTH,
    UNET_WEIGHT_SCALES,
    _scale_weights,
    _scheduler,
    _seeded,
    _text_encoders,
    _unet_config,
    build_controlnet,
    build_lcm_lora,
    tiny_vae,
)

# Stable Diffusion 1.5's layout, narrowed: four levels, attention in the first three.
SD15_UNET_CHANNELS = (32, 64, 128, 128)  # SD 1.5: (320, 640, 1280, 1280)
SD15_SIZE = TINY_HEIGHT // 2  # 512 x 0.25, as SDXL's 1024 becomes 256
SD15_VAE_SCALING = 0.18215  # SD 1.5's VAE
# stable-diffusion-v1-5/stable-diffusion-v1-5/scheduler/scheduler_config.json
SD15_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
}
SSD_1B_TRANSFORMER_LAYERS = (1, 1, 1)  # the SDXL twin's (1, 1, 2), distilled: fewer blocks


def build_family_twins(dest: Path) -> None:
    """Every twin of this module into the zoo folder `dest`."""
    sd15 = build_sd15(dest / "sd15-base")
    sd15_unet = sd15["unet"]
    build_sd15_inpaint(dest / "sd15-inpaint", sd15)
    build_lcm_lora(dest / "lcm-lora-sdv1-5", sd15_unet, seed=23, pipeline="StableDiffusionPipeline")
    build_controlnet(dest / "controlnet-canny-sd15", sd15_unet)
    ssd_unet = build_ssd_1b(dest / "ssd-1b")
    build_lcm_lora(dest / "lcm-lora-ssd-1b", ssd_unet, seed=24)


def _sd15_unet(in_channels: int = 4):
    from diffusers import UNet2DConditionModel

    _seeded(21)
    unet = UNet2DConditionModel(
        sample_size=SD15_SIZE // 8,  # pipelines default to sample_size * 8 pixels
        in_channels=in_channels,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=SD15_UNET_CHANNELS,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=8,  # SD 1.5: eight heads at every level
        cross_attention_dim=TEXT_ENCODER_WIDTH,  # one text encoder (SD 1.5: 768)
    )
    _scale_weights(unet, UNET_WEIGHT_SCALES)
    return unet


def _sd15_components() -> dict:
    from diffusers import PNDMScheduler

    vae = tiny_vae(seed=22)
    vae.register_to_config(scaling_factor=SD15_VAE_SCALING, sample_size=SD15_SIZE)
    encoders = _text_encoders()
    return {
        "unet": _sd15_unet(),
        "vae": vae,
        "text_encoder": encoders["text_encoder"],  # OpenAI CLIP ViT-L's shape, as SD 1.5's
        "tokenizer": encoders["tokenizer"],
        # from_config keeps the keys PNDM ignores, as loading the real folder does.
        "scheduler": PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG),
    }


def _save_sd_pipeline(pipeline_class, components: dict, folder: Path) -> None:
    """Saved without a safety checker: the runner loads Stable Diffusion 1.5 without one."""
    pipe = pipeline_class(**components, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    shutil.rmtree(folder / "tokenizer")  # save_pretrained's tokenizer files vary across versions
    (folder / "tokenizer").mkdir()
    write_tokenizer(folder / "tokenizer")


def build_sd15(folder: Path) -> dict:
    """Like stable-diffusion-v1-5/stable-diffusion-v1-5; returns its components."""
    from diffusers import StableDiffusionPipeline

    components = _sd15_components()
    _save_sd_pipeline(StableDiffusionPipeline, components, folder)
    return components


def build_sd15_inpaint(folder: Path, base: dict) -> None:
    """Like stable-diffusion-v1-5/stable-diffusion-inpainting: the base, with a 9-channel UNet whose
    extra input channels (mask, masked image's latents) are fresh."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel

    _seeded(25)
    unet = UNet2DConditionModel.from_config(base["unet"].config, in_channels=9)
    state = base["unet"].state_dict()
    state["conv_in.weight"] = torch.cat([state["conv_in.weight"], unet.conv_in.weight[:, 4:].clone()], dim=1)
    unet.load_state_dict(state)
    _save_sd_pipeline(StableDiffusionInpaintPipeline, {**base, "unet": unet}, folder)


def build_ssd_1b(folder: Path):
    """Like segmind/SSD-1B: SDXL's text encoders, VAE and scheduler around a shallower UNet whose mid
    block is one ResNet (diffusers' UNetMidBlock2D); returns the UNet."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    _seeded(26)
    unet = UNet2DConditionModel(**{**_unet_config(), "mid_block_type": "UNetMidBlock2D",
                                   "transformer_layers_per_block": SSD_1B_TRANSFORMER_LAYERS})
    _scale_weights(unet, UNET_WEIGHT_SCALES)
    components = {"unet": unet, "vae": tiny_vae(), "scheduler": _scheduler(), **_text_encoders()}
    StableDiffusionXLPipeline(**components, force_zeros_for_empty_prompt=True).save_pretrained(folder)
    write_tokenizers(folder)
    return unet
