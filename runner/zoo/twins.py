"""The tiny twins: SDXL's architectures (UNet, VAE, two CLIP text encoders, inpainting UNet,
ControlNet, T2I-Adapter, fp16-fix VAE, TAESD-XL), its LoRAs and a CLIP scorer, narrowed so that a CPU runs a job in
well under a second, with seeded random weights, saved in the real on-disk formats. torch and
diffusers are imported inside the builders."""
from __future__ import annotations

from pathlib import Path

from runner.zoo import TINY_HEIGHT
from runner.zoo.tokenizer import bpe_merges, bpe_vocab, write_tokenizer, write_tokenizers

# SDXL's layout, narrowed so that a CPU runs a job in well under a second. Cross-attention
# width is the two text encoders' widths together, as in SDXL (768 + 1280 = 2048).
UNET_CHANNELS = (32, 64, 128)  # SDXL: (320, 640, 1280)


UNET_HEADS = (2, 4, 8)  # SDXL's attention_head_dim (5, 10, 20) is a head count: width / 64


UNET_TRANSFORMER_LAYERS = (1, 1, 2)  # SDXL: (1, 2, 10)


ADDITION_TIME_EMBED_DIM = 8  # SDXL: 256; six size/crop numbers are embedded


VAE_CHANNELS = (32, 64, 64, 64)  # SDXL: (128, 256, 512, 512); the decoder dominates the cost


TEXT_ENCODER_WIDTH = 32  # SDXL: 768


TEXT_ENCODER_2_WIDTH = 64  # SDXL: 1280; also its projection dim, as in SDXL


# SDXL: 32. diffusers recognises an SDXL single-file checkpoint by this encoder's tenth block.
TEXT_ENCODER_2_LAYERS = 10


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


def _seeded(seed: int) -> None:
    """Seed torch's global RNG, which diffusers and transformers use to initialise weights."""
    import torch

    torch.manual_seed(seed)


def build_base_components(dest: Path) -> dict:
    from diffusers import StableDiffusionXLPipeline

    components = {
        "unet": _unet(),
        "vae": tiny_vae(),
        "scheduler": _scheduler(),
        **_text_encoders(),
    }
    pipe = StableDiffusionXLPipeline(**components, force_zeros_for_empty_prompt=True)
    pipe.save_pretrained(dest / "sdxl-base")
    write_tokenizers(dest / "sdxl-base")
    return components


def build_inpaint_pipeline(folder: Path, base: dict) -> None:
    """Like diffusers/stable-diffusion-xl-1.0-inpainting-0.1, whose UNet starts from the base."""
    from diffusers import StableDiffusionXLInpaintPipeline

    components = {**base, "unet": _inpaint_unet(base["unet"])}
    pipe = StableDiffusionXLInpaintPipeline(
        **components, requires_aesthetics_score=False, force_zeros_for_empty_prompt=True
    )
    pipe.save_pretrained(folder)
    write_tokenizers(folder)


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


def tiny_vae(seed: int = 3, force_upcast: bool = True):
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


def tiny_autoencoder():
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


def _text_encoders() -> dict:
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    vocab = bpe_vocab()
    ids = {
        "vocab_size": len(vocab),
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "max_position_embeddings": 77,
    }
    def config(width: int, pad_token: str, activation: str, layers: int = 3) -> CLIPTextConfig:
        return CLIPTextConfig(**ids, pad_token_id=vocab[pad_token], hidden_size=width,
                              intermediate_size=4 * width, num_attention_heads=4, num_hidden_layers=layers,
                              projection_dim=width, hidden_act=activation)

    _seeded(4)
    text_encoder = CLIPTextModel(config(TEXT_ENCODER_WIDTH, "<|endoftext|>", "quick_gelu"))  # as OpenAI CLIP ViT-L
    _seeded(5)
    text_encoder_2 = CLIPTextModelWithProjection(config(TEXT_ENCODER_2_WIDTH, "!", "gelu", TEXT_ENCODER_2_LAYERS))  # as OpenCLIP bigG
    return {
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        # Placeholders for the pipeline constructor; the real files come from write_tokenizers.
        "tokenizer": CLIPTokenizer(vocab=vocab, merges=bpe_merges()),
        "tokenizer_2": CLIPTokenizer(vocab=vocab, merges=bpe_merges(), pad_token="!"),
    }


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


def build_lcm_lora(folder: Path, unet, seed: int = 6, pipeline: str = "StableDiffusionXLPipeline") -> None:
    """The LCM-LoRA twin of `unet` (SDXL's by default; `pipeline`: the family's pipeline class, whose
    save_lora_weights writes the file), written by diffusers itself in the diffusers/peft key format."""
    _write_diffusers_lora(folder, unet, seed, pipeline)


def build_tcd_lora(folder: Path, unet) -> None:
    """The TCD-SDXL LoRA twin (h1t/TCD-SDXL-LoRA): LCM-LoRA's layout and format, other weights."""
    _write_diffusers_lora(folder, unet, seed=9)


def _write_diffusers_lora(folder: Path, unet, seed: int, pipeline: str = "StableDiffusionXLPipeline") -> None:
    import diffusers
    import torch

    # latent-consistency/lcm-lora-sdxl adapts the transformer blocks and the ResNet layers.
    targets = _lora_targets(unet, (*TRANSFORMER_LINEARS, "conv1", "conv2", "time_emb_proj"))
    generator = torch.Generator().manual_seed(seed)
    layers = {}
    for name, module in targets.items():
        down, up = _lora_pair(module, rank=8, generator=generator, up_std=LCM_UP_STD)
        layers[f"{name}.lora_A.weight"] = down
        layers[f"{name}.lora_B.weight"] = up
    getattr(diffusers, pipeline).save_lora_weights(folder, unet_lora_layers=layers)


def build_papercut_lora(folder: Path, unet) -> None:
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


def build_controlnet(folder: Path, unet) -> None:
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


def build_t2i_adapter(folder: Path) -> None:
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


CLIP_WIDTH = 32  # openai/clip-vit-large-patch14: text 768, vision 1024, projection 768
CLIP_IMAGE_SIZE = 32  # 224 in the real processor; patches of 8 (14)
CLIP_SHARED_DIRECTION = 0.8
CLIP_PREPROCESSOR = {  # openai/clip-vit-large-patch14's preprocessor_config.json, at the twin's size
    "crop_size": {"height": CLIP_IMAGE_SIZE, "width": CLIP_IMAGE_SIZE},
    "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "CLIPImageProcessor", "processor_class": "CLIPProcessor", "resample": 3,
    "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": CLIP_IMAGE_SIZE},
}


def build_clip(folder: Path) -> None:
    """A CLIP model with its processor in one folder, as openai/clip-vit-large-patch14 ships them: the
    scorer of the CLIP-style metrics (CLIP score, PickScore)."""
    import json

    from transformers import CLIPConfig, CLIPModel

    vocab = bpe_vocab()
    layers = dict(hidden_size=CLIP_WIDTH, intermediate_size=4 * CLIP_WIDTH, num_attention_heads=4, num_hidden_layers=2)
    config = CLIPConfig(
        text_config=dict(**layers, vocab_size=len(vocab), max_position_embeddings=77, hidden_act="quick_gelu",
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                         pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(**layers, image_size=CLIP_IMAGE_SIZE, patch_size=8, hidden_act="quick_gelu"),
        projection_dim=16)
    _seeded(9)
    model = CLIPModel(config)
    # Random towers score every pair near cosine 0 (CLIP score 0 once floored): a shared direction in
    # both embeddings puts scores around the middle of the range, moving with image and prompt.
    model.visual_projection.weight.data.copy_(model.text_projection.weight.data)
    model.text_model.final_layer_norm.bias.data.fill_(CLIP_SHARED_DIRECTION)
    model.vision_model.post_layernorm.bias.data.fill_(CLIP_SHARED_DIRECTION)
    model.save_pretrained(folder)
    write_tokenizer(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(CLIP_PREPROCESSOR, indent=2, sort_keys=True) + "\n")
