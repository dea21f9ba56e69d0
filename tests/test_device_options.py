"""The `device` group's speed options and the `vae` group each give the pixels of the same diffusers
setup written by hand (or, where an option only changes how the work is done, the pixels of the
run without it)."""
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderTiny, DiffusionPipeline, LCMScheduler
from PIL import Image

from tests.helpers import make_config
from runner.errors import UserError
from runner.run import run
from runner.engine.state import ENGINE

SIZE = ("sampling.height=64", "sampling.width=64")


def pixels(record, job_dir):
    return np.asarray(Image.open(job_dir / record["images"][0]["file"]).convert("RGB"))


@pytest.mark.parametrize("option, folder, vae_class", [("fp16_fix", "sdxl-vae-fp16-fix", AutoencoderKL),
                                                      ("taesdxl", "taesdxl", AutoencoderTiny)])
def test_another_vae_draws_as_the_same_vae_passed_by_hand(option, folder, vae_class, tiny_zoo, tmp_path):
    cfg = make_config("zoo=tiny", "device=cpu", f"vae={option}", *SIZE)
    record = run(cfg, tmp_path / option)
    vae = vae_class.from_pretrained(str(tiny_zoo / folder), dtype=torch.float32)
    pipe = DiffusionPipeline.from_pretrained(str(tiny_zoo / "sdxl-base"), vae=vae, dtype=torch.float32)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(str(tiny_zoo / "lcm-lora-sdxl"))
    pipe.fuse_lora()
    expected = pipe(cfg.sampling.prompt, num_inference_steps=4, guidance_scale=0, height=64, width=64,
                    generator=torch.manual_seed(0)).images[0]
    assert np.array_equal(pixels(record, tmp_path / option), np.asarray(expected))
    assert record["components"]["vae"] == str(tiny_zoo / folder) and record["cache"]["vae"] in ("hit", "miss")
    own = run(make_config("zoo=tiny", "device=cpu", *SIZE), tmp_path / "own")
    assert not np.array_equal(pixels(own, tmp_path / "own"), pixels(record, tmp_path / option))
    assert "vae" not in own["components"]


def test_a_folder_that_is_not_a_vae_is_refused_by_name(tiny_zoo, tmp_path):
    with pytest.raises(UserError, match=r"model.vae: .*controlnet-canny-sdxl is not a diffusers VAE folder .*ControlNetModel"):
        run(make_config("zoo=tiny", f"model.vae={tiny_zoo / 'controlnet-canny-sdxl'}", *SIZE), tmp_path / "job")
    assert not (tmp_path / "job").exists()


@pytest.fixture
def dynamo():
    """torch.compile's graph counter, from zero; compiled code dropped after the test."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    ENGINE.reset()
    yield lambda: counters["stats"]["unique_graphs"]
    ENGINE.reset()
    torch._dynamo.reset()


def test_compiled_unet_draws_the_same_and_compiles_once_for_seeds_and_lora_weights(dynamo, tiny_zoo, tmp_path):
    """Regional compile, traced by dynamo (the eager backend: no C++ compiler on the test machine;
    inductor is the default on GPUs). Seeds and LoRA weights (fused or live) reuse the graphs."""
    compiled = (*SIZE, "zoo=tiny", "device=cpu", "device.compile=regional", "device.compile_backend=eager")
    first = run(make_config(*compiled), tmp_path / "first")
    assert first["compile"] == {"compile": "regional", "compile_backend": "eager", "compile_mode": None,
                                "compiled_in_this_job": True}
    graphs = dynamo()
    assert graphs > 0
    jobs = {"seed": ["sampling.seed=5"], "fused_weight": ["lora.lcm.weight=0.5"],
            "live": ["fuse_lora=false"], "live_weight": ["fuse_lora=false", "lora.lcm.weight=0.7"]}
    records, counts = {}, {}
    for name, extra in jobs.items():
        records[name] = run(make_config(*compiled, *extra), tmp_path / name)
        counts[name] = dynamo()
    assert not any(r["compile"]["compiled_in_this_job"] for r in records.values())
    assert counts["seed"] == counts["fused_weight"] == graphs, "a fused weight is written in place: no retrace"
    # Live adapters retrace (peft's layers unmerged); the first changed weight once more, as dynamo
    # turns a value it specialised on into an input; after that, weights reuse the graphs.
    for weight in (0.3, 0.9, 1.1):
        run(make_config(*compiled, "fuse_lora=false", f"lora.lcm.weight={weight}"), tmp_path / f"w{weight}")
        assert dynamo() == counts["live_weight"], f"live weight {weight} must not recompile"

    ENGINE.reset()
    for name, extra in {"first": [], **jobs}.items():
        plain = run(make_config(*SIZE, "zoo=tiny", "device=cpu", *extra), tmp_path / f"plain-{name}")
        done = first if name == "first" else records[name]
        assert np.array_equal(pixels(done, tmp_path / name), pixels(plain, tmp_path / f"plain-{name}")), name
        assert "compile" not in plain


def test_an_unknown_compile_mode_is_named(tmp_path):
    with pytest.raises(UserError, match="device.compile='fast' is not one of none, regional, full"):
        run(make_config("zoo=tiny", "device.compile=fast", *SIZE), tmp_path / "job")


def test_a_hotswap_rank_below_one_is_named(tmp_path):
    with pytest.raises(UserError, match="device.lora_hotswap_rank=0 must be at least 1"):
        run(make_config("zoo=tiny", "device.lora_hotswap_rank=0", *SIZE), tmp_path / "job")
    assert not (tmp_path / "job").exists()


def conv_weights(model):
    return [p for p in model.parameters() if p.dim() == 4]


def held_channels_last(model):
    """Every convolution weight in channels-last layout, and some of them not also contiguous (a
    1x1 kernel is both)."""
    weights = conv_weights(model)
    return (all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
            and any(not w.is_contiguous() for w in weights))


def test_channels_last_draws_as_the_cards_code_with_its_networks_held_channels_last(tiny_zoo, tmp_path, fresh_cache):
    cfg = make_config("zoo=tiny", "device=cpu", "device.channels_last=true", *SIZE)
    record = run(cfg, tmp_path / "held")
    loaded = ENGINE.loaded_pipelines()[0]
    assert held_channels_last(loaded.pipe.unet) and held_channels_last(loaded.pipe.vae)

    def card(channels_last):
        pipe = DiffusionPipeline.from_pretrained(str(tiny_zoo / "sdxl-base"), dtype=torch.float32)
        if channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
        pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
        pipe.load_lora_weights(str(tiny_zoo / "lcm-lora-sdxl"))
        pipe.fuse_lora()
        image = pipe(cfg.sampling.prompt, num_inference_steps=4, guidance_scale=0, height=64, width=64,
                     generator=torch.manual_seed(0)).images[0]
        return np.asarray(image, dtype=np.int16)

    held = pixels(record, tmp_path / "held").astype(np.int16)
    assert np.array_equal(held, card(channels_last=True))
    assert np.abs(held - card(channels_last=False)).max() <= 1  # the same sums in another order


@pytest.mark.parametrize("experiment, component", [("controlnet_canny", "controlnet"),
                                                   ("t2i_adapter_canny", "adapter")])
def test_channels_last_holds_the_conditioning_network_so_and_keeps_the_cards_pixels(experiment, component,
                                                                                    tiny_zoo, tmp_path, fresh_cache):
    from tests.test_workflows import CARD, as_array, output_pixels

    cfg = make_config(f"experiment={experiment}", "zoo=tiny", "device=cpu", "device.channels_last=true")
    record = run(cfg, tmp_path / "held")
    (model, _folder), = ENGINE.components.entries()
    assert type(model).__name__ == {"controlnet": "ControlNetModel", "adapter": "T2IAdapter"}[component]
    assert held_channels_last(model)
    difference = np.abs(output_pixels(record, tmp_path / "held") - as_array(CARD[experiment](tiny_zoo, cfg)))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01


def test_device_cpu_fast_is_the_cpu_with_channels_last_and_a_batch_decoded_one_image_at_a_time(tiny_zoo, tmp_path,
                                                                                               fresh_cache):
    batch = ("zoo=tiny", *SIZE, "sampling.num_images=2")
    fast = run(make_config(*batch, "device=cpu_fast"), tmp_path / "fast")
    loaded = ENGINE.loaded_pipelines()[0]
    assert loaded.device == "cpu" and loaded.dtype == torch.float32
    assert held_channels_last(loaded.pipe.unet) and held_channels_last(loaded.pipe.vae) and loaded.pipe.vae.use_slicing
    assert fast["config"]["device"] == {**make_config("device=cpu").device, "channels_last": True, "vae_slicing": True}
    plain = run(make_config(*batch, "device=cpu"), tmp_path / "plain")
    assert plain["cache"] == {"base": "miss"} and not ENGINE.loaded_pipelines()[0].pipe.vae.use_slicing
    for index in (0, 1):
        fast_pixels = np.asarray(Image.open(tmp_path / "fast" / fast["images"][index]["file"]), dtype=np.int16)
        plain_pixels = np.asarray(Image.open(tmp_path / "plain" / plain["images"][index]["file"]), dtype=np.int16)
        assert np.abs(fast_pixels - plain_pixels).max() <= 1
