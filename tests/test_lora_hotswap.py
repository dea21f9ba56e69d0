"""A new LoRA file under a loaded adapter's name is swapped into its layers in place (peft's hotswap)
and draws what a fresh load draws; a file that cannot be swapped exactly is loaded fresh; a compiled
UNet keeps its graphs across a swap."""
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from tests.helpers import make_config
from runner.errors import UserError
from runner.run import run
from runner.engine.state import ENGINE

SIZE = ("sampling.height=64", "sampling.width=64")
LIVE = ("zoo=tiny", "device=cpu", "lora=lcm_papercut", "fuse_lora=false", *SIZE)


def pixels(record, job_dir):
    return np.asarray(Image.open(job_dir / record["images"][0]["file"]).convert("RGB"), dtype=np.int16)


def another_style(zoo_dir, folder, alpha_factor, rank=4):
    """A kohya-format LoRA on papercut's layers (rank 4, alpha 2) with other weights, its alphas times
    `alpha_factor`, cut to `rank`."""
    generator = torch.Generator().manual_seed(1)
    weights = {}
    for key, value in load_file(zoo_dir / "papercut" / "papercut.safetensors").items():
        if key.endswith(".alpha"):
            weights[key] = value * alpha_factor
            continue
        value = value[:rank] if key.endswith("lora_down.weight") else value[:, :rank]
        weights[key] = value * 0.5 + torch.randn(value.shape, generator=generator) * value.std()
    folder.mkdir()
    save_file(weights, folder / "style.safetensors")
    return (f"lora.papercut.source={folder}", "lora.papercut.weight_name=style.safetensors")


def cold(overrides, job_dir):
    ENGINE.reset()
    return run(make_config(*overrides), job_dir)


@pytest.mark.parametrize("fuse, alpha_factor, rank", [(False, 2.0, 4), (True, 0.5, 2)],
                         ids=["live, another alpha", "fused, another alpha and rank"])
def test_a_swapped_lora_draws_as_a_fresh_load(fuse, alpha_factor, rank, tiny_zoo, tmp_path, fresh_cache):
    """There and back: papercut, the other file (swapped in), papercut again (swapped back)."""
    stack = (*LIVE, f"fuse_lora={fuse}", "lora.papercut.weight=0.7")
    style = another_style(tiny_zoo, tmp_path / "style", alpha_factor, rank)
    first = run(make_config(*stack), tmp_path / "first")
    swapped = run(make_config(*stack, *style), tmp_path / "swapped")
    back = run(make_config(*stack, "lora.papercut.weight=1.2"), tmp_path / "back")

    assert [a["hotswap"] for a in swapped["adapters"]] == [False, True]
    assert [a["hotswap"] for a in back["adapters"]] == [False, True]
    fresh = cold((*stack, *style), tmp_path / "fresh")
    fresh_back = cold((*stack, "lora.papercut.weight=1.2"), tmp_path / "fresh-back")
    assert np.array_equal(pixels(swapped, tmp_path / "swapped"), pixels(fresh, tmp_path / "fresh"))
    assert np.array_equal(pixels(back, tmp_path / "back"), pixels(fresh_back, tmp_path / "fresh-back"))
    assert np.abs(pixels(first, tmp_path / "first") - pixels(swapped, tmp_path / "swapped")).max() > 20


def test_a_lora_on_layers_the_old_one_lacks_is_loaded_fresh(tiny_zoo, tmp_path, fresh_cache):
    """The LCM-LoRA targets many more layers than papercut: into papercut's slot, it is a new load."""
    stack = (*LIVE, "lora.papercut.weight=0.5")
    run(make_config(*stack), tmp_path / "first")
    lcm_file = (f"lora.papercut.source={tiny_zoo / 'lcm-lora-sdxl'}",
                "lora.papercut.weight_name=pytorch_lora_weights.safetensors")
    reloaded = run(make_config(*stack, *lcm_file), tmp_path / "reloaded")
    assert [a["hotswap"] for a in reloaded["adapters"]] == [False, False]
    fresh = cold((*stack, *lcm_file), tmp_path / "fresh")
    assert np.array_equal(pixels(reloaded, tmp_path / "reloaded"), pixels(fresh, tmp_path / "fresh"))


def test_a_compiled_unet_keeps_its_graphs_across_a_swap(tiny_zoo, tmp_path):
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    ENGINE.reset()
    try:
        compiled = (*LIVE, "device.compile=regional", "device.compile_backend=eager")
        style = another_style(tiny_zoo, tmp_path / "style", 2.0)
        run(make_config(*compiled), tmp_path / "first")
        run(make_config(*compiled, "lora.papercut.weight=0.6"), tmp_path / "weight")  # weights become inputs
        graphs = counters["stats"]["unique_graphs"]
        swapped = run(make_config(*compiled, *style, "lora.papercut.weight=0.6"), tmp_path / "swapped")
        assert swapped["adapters"][1]["hotswap"] is True
        assert counters["stats"]["unique_graphs"] == graphs, "no retrace for a swapped file"
        fresh = cold((*LIVE, *style, "lora.papercut.weight=0.6"), tmp_path / "fresh")
        assert np.array_equal(pixels(swapped, tmp_path / "swapped"), pixels(fresh, tmp_path / "fresh"))
    finally:
        ENGINE.reset()
        torch._dynamo.reset()


def with_text_encoder_layers(zoo_dir, folder):
    """papercut's UNet layers plus random LoRA layers on the first text encoder, in diffusers' format."""
    from diffusers import StableDiffusionXLPipeline
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    pipe = StableDiffusionXLPipeline.from_pretrained(zoo_dir / "sdxl-base")
    pipe.load_lora_weights(str(zoo_dir / "papercut"), weight_name="papercut.safetensors", adapter_name="a")
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"]), pipe.text_encoder,
                            adapter_name="a")
    generator = torch.Generator().manual_seed(2)
    for name, parameter in pipe.text_encoder.named_parameters():
        if "lora_" in name:
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.2
    StableDiffusionXLPipeline.save_lora_weights(
        folder, unet_lora_layers=get_peft_model_state_dict(pipe.unet, adapter_name="a"),
        text_encoder_lora_layers=get_peft_model_state_dict(pipe.text_encoder, adapter_name="a"))
    return (f"lora.papercut.source={folder}", "lora.papercut.weight_name=pytorch_lora_weights.safetensors")


def test_a_lora_with_text_encoder_layers_is_never_swapped(tiny_zoo, tmp_path, fresh_cache):
    """An old adapter's text-encoder layers would stay behind a UNet-only swap; diffusers refuses to
    swap into text encoders: both ways, the file is loaded fresh. (This test also found prompt
    embeddings kept across the change of file: they are now keyed by the file, too.)"""
    with_text = (*LIVE, *with_text_encoder_layers(tiny_zoo, tmp_path / "with-text"))
    run(make_config(*with_text), tmp_path / "with")
    without = run(make_config(*LIVE), tmp_path / "without")  # from text-encoder layers
    back = run(make_config(*with_text), tmp_path / "back")  # to them
    assert without["adapters"][1]["hotswap"] is False and back["adapters"][1]["hotswap"] is False
    for overrides, done, name in ((LIVE, without, "without"), (with_text, back, "back")):
        fresh = cold(overrides, tmp_path / f"fresh-{name}")
        assert np.array_equal(pixels(done, tmp_path / name), pixels(fresh, tmp_path / f"fresh-{name}")), name
    assert np.abs(pixels(without, tmp_path / "without") - pixels(back, tmp_path / "back")).max() > 0


def test_a_fused_stack_with_text_encoder_layers_changes_like_fresh_processes(tiny_zoo, tmp_path, fresh_cache,
                                                                            monkeypatch):
    """The weights a fused stack changed in a text encoder come back from the model's files too."""
    from runner.engine import lora, models

    reads = []
    monkeypatch.setattr(lora, "as_loaded", lambda loaded, component: reads.append(component) or
                        models.as_loaded(loaded, component))
    fused = ("zoo=tiny", "device=cpu", "lora=lcm_papercut", *SIZE, *with_text_encoder_layers(tiny_zoo, tmp_path / "t"))
    warm = {}
    for name, weight in (("a", 0.8), ("b", 0.3), ("c", 0.8)):
        warm[name] = pixels(run(make_config(*fused, f"lora.papercut.weight={weight}"), tmp_path / name), tmp_path / name)
    assert sorted(reads) == ["text_encoder", "unet"]
    fresh = cold((*fused, "lora.papercut.weight=0.3"), tmp_path / "fresh")
    assert np.array_equal(warm["b"], pixels(fresh, tmp_path / "fresh"))
    assert np.array_equal(warm["a"], warm["c"]) and np.abs(warm["a"] - warm["b"]).max() > 0


@pytest.mark.parametrize("text_layers", [False, True], ids=["UNet-only files", "a file with text-encoder layers"])
def test_a_lora_weight_change_reencodes_the_prompt_only_where_the_text_encoders_hold_it(
        text_layers, tiny_zoo, tmp_path, fresh_cache):
    """LCM-LoRA and papercut touch only the UNet: their weights leave the text encoders' output as it
    is, so a weight sweep keeps the prompt's embeddings; a file with text-encoder layers does not."""
    stack = (*LIVE, *with_text_encoder_layers(tiny_zoo, tmp_path / "with-text")) if text_layers else LIVE
    run(make_config(*stack, "lora.papercut.weight=0.8"), tmp_path / "first")
    warm = run(make_config(*stack, "lora.papercut.weight=0.3"), tmp_path / "warm")
    assert warm["prompt_embeddings"] == ("encoded" if text_layers else "cached")
    fresh = cold((*stack, "lora.papercut.weight=0.3"), tmp_path / "cold")
    assert np.array_equal(pixels(warm, tmp_path / "warm"), pixels(fresh, tmp_path / "cold"))


def higher_rank(zoo_dir, folder, rank=8):
    """papercut (rank 4, kohya format) widened to `rank` with random extra directions."""
    generator = torch.Generator().manual_seed(3)
    weights = {}
    for key, value in load_file(zoo_dir / "papercut" / "papercut.safetensors").items():
        if key.endswith("lora_down.weight"):
            extra = torch.randn((rank - value.shape[0], *value.shape[1:]), generator=generator) * value.std()
            value = torch.cat([value, extra])
        elif key.endswith("lora_up.weight"):
            extra = torch.randn((value.shape[0], rank - value.shape[1], *value.shape[2:]), generator=generator)
            value = torch.cat([value, extra * value.std()], dim=1)
        weights[key] = value
    folder.mkdir()
    save_file(weights, folder / "wide.safetensors")
    return (f"lora.papercut.source={folder}", "lora.papercut.weight_name=wide.safetensors")


def test_padded_loras_swap_a_higher_rank_without_a_retrace(tiny_zoo, tmp_path):
    """device.lora_hotswap_rank=8: papercut (rank 4) is padded with zeros to 8 and draws as unpadded
    (within a level: the sums run over more, zero, terms); a rank-8 file then swaps into it with no
    retrace of the compiled UNet, and draws as a fresh load. Without the option the swap changes the
    layers' shapes, and the compiled UNet retraces."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    wide = higher_rank(tiny_zoo, tmp_path / "wide")
    plain = (*LIVE, "lora.papercut.weight=0.6")
    compiled = ("device.compile=regional", "device.compile_backend=eager")
    unpadded = cold(plain, tmp_path / "unpadded")
    fresh = cold((*plain, *wide), tmp_path / "fresh")

    def swap_graphs(options, name):
        """New graphs traced by the swap to the rank-8 file, after a first job and a weight change."""
        torch._dynamo.reset()
        counters.clear()
        ENGINE.reset()
        run(make_config(*LIVE, *options), tmp_path / f"{name}-first")
        run(make_config(*plain, *options), tmp_path / f"{name}-weight")  # weights become inputs
        graphs = counters["stats"]["unique_graphs"]
        swapped = run(make_config(*plain, *options, *wide), tmp_path / f"{name}-swapped")
        assert swapped["adapters"][1]["hotswap"] is True
        assert np.abs(pixels(swapped, tmp_path / f"{name}-swapped") - pixels(fresh, tmp_path / "fresh")).max() <= 1
        return counters["stats"]["unique_graphs"] - graphs

    try:
        retraced = swap_graphs(compiled, "unpadded")
        assert retraced > 0, "without padding a higher rank changes the compiled layers' shapes"
        retraced = swap_graphs((*compiled, "device.lora_hotswap_rank=8"), "padded")
        assert retraced == 0, "padded to rank 8: the rank-8 file fits the compiled layers"
        padded_weight = run(make_config(*plain, *compiled, "device.lora_hotswap_rank=8"), tmp_path / "padded-again")
        assert np.abs(pixels(padded_weight, tmp_path / "padded-again")
                      - pixels(unpadded, tmp_path / "unpadded")).max() <= 1, "papercut swapped back, padded"
    finally:
        ENGINE.reset()
        torch._dynamo.reset()


def test_a_lora_above_the_hotswap_rank_is_refused_naming_the_option(tiny_zoo, tmp_path, fresh_cache):
    with pytest.raises(UserError) as refused:
        run(make_config(*LIVE, "device.lora_hotswap_rank=2"), tmp_path / "job")
    message = str(refused.value)
    assert "device.lora_hotswap_rank=2 is below the rank of lora.lcm" in message and "at least 8" in message
    ok = run(make_config(*LIVE, "device.lora_hotswap_rank=8"), tmp_path / "ok")  # the model is still usable
    assert [a["name"] for a in ok["adapters"]] == ["lcm", "papercut"]
