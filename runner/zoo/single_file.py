"""The SDXL twin as one .safetensors checkpoint in the original (Stability / A1111) key layout, as
single-file models are shared: `model.diffusion_model.*` (UNet), `first_stage_model.*` (VAE),
`conditioner.embedders.0.transformer.*` (CLIP ViT-L) and `conditioner.embedders.1.model.*`
(OpenCLIP bigG). The key mapping is diffusers' own converter,
scripts/convert_diffusers_to_original_sdxl.py, for SDXL's three-level UNet; diffusers'
`from_single_file` reads the file back with the folder's configs."""
from __future__ import annotations

import re
from pathlib import Path

# --- UNet (the converter's tables; it hard-codes SDXL's three levels, as the twin keeps them) ---
_UNET = [
    ("time_embed.0.weight", "time_embedding.linear_1.weight"), ("time_embed.0.bias", "time_embedding.linear_1.bias"),
    ("time_embed.2.weight", "time_embedding.linear_2.weight"), ("time_embed.2.bias", "time_embedding.linear_2.bias"),
    ("input_blocks.0.0.weight", "conv_in.weight"), ("input_blocks.0.0.bias", "conv_in.bias"),
    ("out.0.weight", "conv_norm_out.weight"), ("out.0.bias", "conv_norm_out.bias"),
    ("out.2.weight", "conv_out.weight"), ("out.2.bias", "conv_out.bias"),
    ("label_emb.0.0.weight", "add_embedding.linear_1.weight"), ("label_emb.0.0.bias", "add_embedding.linear_1.bias"),
    ("label_emb.0.2.weight", "add_embedding.linear_2.weight"), ("label_emb.0.2.bias", "add_embedding.linear_2.bias"),
]
_UNET_RESNET = [("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("out_layers.0", "norm2"),
                ("out_layers.3", "conv2"), ("emb_layers.1", "time_emb_proj"), ("skip_connection", "conv_shortcut")]


def _unet_layers():
    layers = []
    for i in range(3):
        for j in range(2):
            layers.append((f"input_blocks.{3 * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
            if i > 0:
                layers.append((f"input_blocks.{3 * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}."))
        for j in range(4):
            layers.append((f"output_blocks.{3 * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
            if i < 2:
                layers.append((f"output_blocks.{3 * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        layers.append((f"input_blocks.{3 * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
        layers.append((f"output_blocks.{3 * i + 2}.{1 if i == 0 else 2}.", f"up_blocks.{i}.upsamplers.0."))
    layers.append(("output_blocks.2.2.conv.", "output_blocks.2.1.conv."))
    layers.append(("middle_block.1.", "mid_block.attentions.0."))
    layers += [(f"middle_block.{2 * j}.", f"mid_block.resnets.{j}.") for j in range(2)]
    return layers


def convert_unet(state: dict) -> dict:
    mapping = {k: k for k in state}
    for sd_name, hf_name in _UNET:
        mapping[hf_name] = sd_name
    for k, v in mapping.items():
        if "resnets" in k:
            for sd_part, hf_part in _UNET_RESNET:
                v = v.replace(hf_part, sd_part)
            mapping[k] = v
    for k, v in mapping.items():
        for sd_part, hf_part in _unet_layers():
            v = v.replace(hf_part, sd_part)
        mapping[k] = v
    return {sd_name: state[hf_name] for hf_name, sd_name in mapping.items()}


# --- VAE ---------------------------------------------------------------------------------------
def _vae_map():
    pairs = [("nin_shortcut", "conv_shortcut"), ("norm_out", "conv_norm_out"), ("mid.attn_1.", "mid_block.attentions.0.")]
    for i in range(4):
        pairs += [(f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}.") for j in range(2)]
        if i < 3:
            pairs.append((f"down.{i}.downsample.", f"down_blocks.{i}.downsamplers.0."))
            pairs.append((f"up.{3 - i}.upsample.", f"up_blocks.{i}.upsamplers.0."))
        pairs += [(f"decoder.up.{3 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}.") for j in range(3)]
    pairs += [(f"mid.block_{i + 1}.", f"mid_block.resnets.{i}.") for i in range(2)]
    return pairs


_VAE_ATTENTION = [("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."), ("proj_out.", "to_out.0.")]


def convert_vae(state: dict) -> dict:
    mapping = {k: k for k in state}
    for k, v in mapping.items():
        for sd_part, hf_part in _vae_map():
            v = v.replace(hf_part, sd_part)
        mapping[k] = v
    for k, v in mapping.items():
        if "attentions" in k:
            for sd_part, hf_part in _VAE_ATTENTION:
                v = v.replace(hf_part, sd_part)
            mapping[k] = v
    converted = {v: state[k] for k, v in mapping.items()}
    for k, v in converted.items():  # the original attention projections are 1x1 convolutions
        if any(f"mid.attn_1.{name}.weight" in k for name in ("q", "k", "v", "proj_out")) and v.ndim != 1:
            converted[k] = v.reshape(*v.shape, 1, 1)
    return converted


# --- the OpenCLIP text encoder -----------------------------------------------------------------
_TEXT = [("transformer.resblocks.", "text_model.encoder.layers."), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
         (".c_fc.", ".fc1."), (".c_proj.", ".fc2."), (".attn", ".self_attn"),
         ("ln_final.", "text_model.final_layer_norm."),
         ("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
         ("positional_embedding", "text_model.embeddings.position_embedding.weight")]
_PROTECTED = {re.escape(hf): sd for sd, hf in _TEXT}
_TEXT_PATTERN = re.compile("|".join(_PROTECTED))


def convert_openclip_text_encoder(state: dict) -> dict:
    import torch

    def relabel(key: str) -> str:
        return _TEXT_PATTERN.sub(lambda m: _PROTECTED[re.escape(m.group(0))], key)

    converted, qkv = {}, {}
    for k, v in state.items():
        found = re.match(r"(.*)\.self_attn\.([qkv])_proj\.(weight|bias)$", k)
        if found:
            qkv.setdefault((found.group(1) + ".self_attn", found.group(3)), {})[found.group(2)] = v
            continue
        converted[relabel(k)] = v
    for (prefix, kind), parts in qkv.items():
        converted[f"{relabel(prefix)}.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return converted


def write_single_file(folder: Path, dest: Path) -> None:
    """`folder` (a StableDiffusionXLPipeline folder) as one checkpoint in the original key layout."""
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    unet = convert_unet(load_file(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    vae = convert_vae(load_file(folder / "vae" / "diffusion_pytorch_model.safetensors"))
    # transformers 5 saves CLIPTextModel without its `text_model.` prefix; the original layout has it.
    text = {k if k.startswith("text_model.") else f"text_model.{k}": v
            for k, v in load_file(folder / "text_encoder" / "model.safetensors").items()}
    text_2 = convert_openclip_text_encoder(load_file(folder / "text_encoder_2" / "model.safetensors"))
    # OpenCLIP keeps the projection as a matrix applied on the right (diffusers' converter transposes it)
    text_2["text_projection"] = text_2.pop("text_projection.weight").T.contiguous()
    state = {**{f"model.diffusion_model.{k}": v for k, v in unet.items()},
             **{f"first_stage_model.{k}": v for k, v in vae.items()},
             **{f"conditioner.embedders.0.transformer.{k}": v for k, v in text.items()},
             **{f"conditioner.embedders.1.model.{k}": v for k, v in text_2.items()}}
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(dest))
    dest.chmod(0o644)
