"""Every workflow of the model card, as an experiment on the tiny zoo, equals the card's own code
called by hand on the same tiny components, seed and size."""
import io

import cv2
import numpy as np
import pytest
import torch
from diffusers import (
    AutoPipelineForInpainting,
    ControlNetModel,
    DiffusionPipeline,
    LCMScheduler,
    StableDiffusionXLAdapterPipeline,
    StableDiffusionXLControlNetPipeline,
    T2IAdapter,
)
from diffusers.utils import load_image
from PIL import Image

from tests.helpers import make_config
from runner.errors import UserError
from runner.run import run
from runner.engine.state import ENGINE

F32 = torch.float32


def output_pixels(record, job_dir, index=0):
    return np.asarray(Image.open(job_dir / record["images"][index]["file"]).convert("RGB"), dtype=np.int16)


def as_array(image):
    return np.asarray(image, dtype=np.int16)


def with_lcm(pipe, zoo_dir, fuse):
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(str(zoo_dir / "lcm-lora-sdxl"))
    if fuse:
        pipe.fuse_lora()
    return pipe


def card_inpaint(zoo, size):
    pipe = with_lcm(AutoPipelineForInpainting.from_pretrained(str(zoo / "sdxl-inpaint"), torch_dtype=F32), zoo, True)
    init_image = load_image(str(zoo / "images/inpaint.png")).resize((size, size))
    mask_image = load_image(str(zoo / "images/inpaint_mask.png")).resize((size, size))
    generator = torch.manual_seed(42)
    return pipe(prompt="a castle on top of a mountain, highly detailed, 8k", image=init_image,
                mask_image=mask_image, generator=generator, num_inference_steps=5, guidance_scale=4).images[0]


def card_lora_papercut(zoo, size):
    pipe = DiffusionPipeline.from_pretrained(str(zoo / "sdxl-base"), torch_dtype=F32)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(str(zoo / "lcm-lora-sdxl"), adapter_name="lcm")
    pipe.load_lora_weights(str(zoo / "papercut"), weight_name="papercut.safetensors", adapter_name="papercut")
    pipe.set_adapters(["lcm", "papercut"], adapter_weights=[1.0, 0.8])
    generator = torch.manual_seed(0)
    return pipe("papercut, a cute fox", num_inference_steps=4, guidance_scale=1, generator=generator,
                height=size, width=size).images[0]


def card_canny(path, size, low=100, high=200):
    image = np.array(load_image(str(path)).resize((size, size)))
    image = cv2.Canny(image, low, high)
    image = image[:, :, None]
    return Image.fromarray(np.concatenate([image, image, image], axis=2))


def card_controlnet(zoo, size):
    canny_image = card_canny(zoo / "images/vermeer.png", size)
    controlnet = ControlNetModel.from_pretrained(str(zoo / "controlnet-canny-sdxl"), torch_dtype=F32)
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(str(zoo / "sdxl-base"), controlnet=controlnet,
                                                               torch_dtype=F32)
    pipe = with_lcm(pipe, zoo, True)
    generator = torch.manual_seed(0)
    return pipe("picture of the mona lisa", image=canny_image, num_inference_steps=5, guidance_scale=1.5,
                controlnet_conditioning_scale=0.5, cross_attention_kwargs={"scale": 1},
                generator=generator).images[0]


def card_t2i_adapter(zoo, size, detect):
    canny_image = card_canny(zoo / "images/canny_source.png", detect).resize((size, size))
    adapter = T2IAdapter.from_pretrained(str(zoo / "t2i-adapter-canny-sdxl"), torch_dtype=F32)
    pipe = StableDiffusionXLAdapterPipeline.from_pretrained(str(zoo / "sdxl-base"), adapter=adapter, torch_dtype=F32)
    pipe = with_lcm(pipe, zoo, False)
    generator = torch.manual_seed(0)
    return pipe(prompt="Mystical fairy in real, magic, 4k picture, high quality",
                negative_prompt="extra digit, fewer digits, cropped, worst quality, low quality, glitch, "
                                "deformed, mutated, ugly, disfigured",
                image=canny_image, num_inference_steps=4, guidance_scale=1.5, adapter_conditioning_scale=0.8,
                adapter_conditioning_factor=1, generator=generator).images[0]


CARD = {
    "inpaint": lambda zoo, cfg: card_inpaint(zoo, cfg.sampling.width),
    "lora_papercut": lambda zoo, cfg: card_lora_papercut(zoo, cfg.sampling.width),
    "controlnet_canny": lambda zoo, cfg: card_controlnet(zoo, cfg.sampling.width),
    "t2i_adapter_canny": lambda zoo, cfg: card_t2i_adapter(zoo, cfg.sampling.width, cfg.conditioning.detect_resolution),
}


@pytest.mark.parametrize("experiment", sorted(CARD))
def test_experiment_pixels_equal_the_cards_code(experiment, tiny_zoo, tmp_path):
    cfg = make_config(f"experiment={experiment}", "zoo=tiny", "device=cpu")
    record = run(cfg, tmp_path / "job")
    expected = as_array(CARD[experiment](tiny_zoo, cfg))
    assert np.array_equal(output_pixels(record, tmp_path / "job"), expected)


def test_experiments_keep_the_cards_parameters():
    expected = {
        "t2i": dict(steps=4, guidance_scale=0.0, fuse_lora=True, lora={"lcm": 1.0}),
        "inpaint": dict(steps=5, guidance_scale=4.0, seed=42, fuse_lora=True, lora={"lcm": 1.0}),
        "lora_papercut": dict(steps=4, guidance_scale=1.0, seed=0, fuse_lora=False,
                              lora={"lcm": 1.0, "papercut": 0.8}),
        "controlnet_canny": dict(steps=5, guidance_scale=1.5, seed=0, fuse_lora=True, lora={"lcm": 1.0},
                                 conditioning_scale=0.5, lora_scale=1.0),
        "t2i_adapter_canny": dict(steps=4, guidance_scale=1.5, seed=0, fuse_lora=False, lora={"lcm": 1.0},
                                  conditioning_scale=0.8, conditioning_factor=1.0, detect_resolution=384),
    }
    for experiment, want in expected.items():
        cfg = make_config(f"experiment={experiment}")
        assert (cfg.sampling.height, cfg.sampling.width) == (1024, 1024), experiment
        assert {name: entry.weight for name, entry in cfg.lora.items()} == want.pop("lora"), experiment
        for key, value in want.items():
            node = cfg.sampling if key in ("steps", "guidance_scale", "seed") else (
                cfg if key in ("fuse_lora", "lora_scale") else cfg.conditioning)
            assert node[key] == value, (experiment, key)
    assert make_config("experiment=inpaint").model.source == "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"
    assert make_config("experiment=t2i_adapter_canny", "zoo=tiny").conditioning.detect_resolution == 96


@pytest.mark.parametrize("experiment", ["inpaint", "controlnet_canny", "t2i_adapter_canny"])
def test_job_folder_keeps_what_was_fed_to_the_pipeline(experiment, tiny_zoo, tmp_path):
    job = tmp_path / "job"
    record = run(make_config(f"experiment={experiment}", "zoo=tiny", "sampling.height=64", "sampling.width=64",
                             "sampling.num_images=2"), job)
    roles = {"inpaint": {"image", "mask_image"}, "controlnet_canny": {"image", "control_image"},
             "t2i_adapter_canny": {"image", "control_image"}}[experiment]
    assert set(record["inputs"]) == roles | {"side_by_side"}
    detect = 96 if experiment == "t2i_adapter_canny" else 64  # the adapter's canny runs at 384 x 0.25
    for role in roles:
        assert Image.open(job / record["inputs"][role]).size == ((detect,) * 2 if role == "image" else (64, 64))
    side = Image.open(job / record["inputs"]["side_by_side"])
    fed = 2 if experiment == "inpaint" else 1  # like the card's make_image_grid: fed images, then outputs
    assert side.size == (64 * (fed + 2), 64)
    if "control_image" in roles:
        edges = np.asarray(Image.open(job / record["inputs"]["control_image"]))
        assert (edges > 0).mean() > 0.01, "the canny map should have edges"


def test_conditioning_scale_sweep_loads_each_model_once(tiny_zoo, tmp_path):
    ENGINE.reset()
    records = [run(make_config("experiment=controlnet_canny", "zoo=tiny", f"conditioning.conditioning_scale={s}"),
                   tmp_path / str(s)) for s in (0.0, 1.0)]
    assert [r["cache"] for r in records] == [{"base": "miss", "controlnet": "miss"},
                                              {"base": "hit", "controlnet": "hit"}]
    change = np.abs(output_pixels(records[0], tmp_path / "0.0") - output_pixels(records[1], tmp_path / "1.0")).mean()
    assert change >= 5, "the ControlNet should change the image clearly"


def test_conditioning_images_are_made_once_and_follow_their_file(tiny_zoo, tmp_path, monkeypatch):
    """A scale sweep feeds the same canny map every job: it is made and encoded once, and each job
    folder still gets the files `image.save` writes; a source image changed on disk is read again."""
    from runner.engine import conditioning

    source = tmp_path / "source.png"
    Image.open(tiny_zoo / "images" / "canny_source.png").save(source)
    made, encoded = [], []
    canny, save = conditioning.canny_map, Image.Image.save
    monkeypatch.setattr(conditioning, "canny_map", lambda *args: made.append(1) or canny(*args))
    monkeypatch.setattr(Image.Image, "save", lambda self, fp, *a, **k: (  # input encodings into memory (the
        # generated images, encoded with their metadata, are not inputs)
        encoded.append(k.get("format")) if isinstance(fp, io.BytesIO) and "pnginfo" not in k else None)
        or save(self, fp, *a, **k))
    jobs = ("experiment=controlnet_canny", "zoo=tiny", "sampling.height=64", "sampling.width=64",
            f"conditioning.image={source}")
    first = run(make_config(*jobs, "conditioning.conditioning_scale=0.2"), tmp_path / "a")
    second = run(make_config(*jobs, "conditioning.conditioning_scale=0.9"), tmp_path / "b")
    assert len(made) == 1 and encoded == ["PNG", "PNG"], "one canny map, its two inputs encoded once"
    for role, relative in first["inputs"].items():
        if role != "side_by_side":
            expected = tmp_path / f"expected-{role}.png"
            save(Image.open(tmp_path / "a" / relative), expected, format="PNG")
            assert (tmp_path / "b" / relative).read_bytes() == (tmp_path / "a" / relative).read_bytes()
            assert np.array_equal(as_array(Image.open(expected)), as_array(Image.open(tmp_path / "b" / relative)))
    Image.open(source).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(source)
    third = run(make_config(*jobs, "conditioning.conditioning_scale=0.9"), tmp_path / "c")
    assert len(made) == 2
    flipped = as_array(Image.open(tmp_path / "c" / third["inputs"]["control_image"]))
    assert not np.array_equal(flipped, as_array(Image.open(tmp_path / "b" / second["inputs"]["control_image"])))


def test_switching_conditioning_kinds_shares_the_loaded_base(tiny_zoo, tmp_path):
    ENGINE.reset()
    small = ("zoo=tiny", "sampling.height=64", "sampling.width=64", "fuse_lora=false")
    kinds = ["t2i", "controlnet_canny", "t2i_adapter_canny", "lora_papercut"]
    records = [run(make_config(f"experiment={k}", *small), tmp_path / k) for k in kinds]
    assert [r["cache"]["base"] for r in records] == ["miss", "hit", "hit", "hit"]
    assert [r["pipeline"] for r in records] == ["StableDiffusionXLPipeline", "StableDiffusionXLControlNetPipeline",
                                               "StableDiffusionXLAdapterPipeline", "StableDiffusionXLPipeline"]


@pytest.mark.parametrize("override,key", [
    ("conditioning.image=/no/such/image.png", "conditioning.image='/no/such/image.png'"),
    ("conditioning.mask_image=/no/mask.png", "conditioning.mask_image='/no/mask.png'"),
])
def test_missing_input_image_or_mask_is_named_and_nothing_is_written(override, key, tiny_zoo, tmp_path):
    with pytest.raises(UserError, match="does not exist") as error:
        run(make_config("experiment=inpaint", "zoo=tiny", override), tmp_path / "job")
    assert key in str(error.value)
    assert not (tmp_path / "job").exists()


@pytest.mark.parametrize("override,message", [
    ("conditioning.strength=0", "conditioning.strength=0"),
    ("conditioning.conditioning_scale=-1", "conditioning.conditioning_scale=-1"),
    ("conditioning.control_guidance_end=0", "control_guidance_end=0"),
    ("+conditioning.mask_image=x.png", "conditioning.mask_image"),
])
def test_bad_conditioning_values_are_named(override, message, tiny_zoo, tmp_path):
    experiment = "inpaint" if "strength" in override else "controlnet_canny"
    with pytest.raises(UserError) as error:
        run(make_config(f"experiment={experiment}", "zoo=tiny", override), tmp_path / "job")
    assert message in str(error.value)


def test_urls_are_refused_offline_with_a_way_out(tmp_path):
    with pytest.raises(UserError) as error:
        run(make_config("experiment=controlnet_canny", "zoo=tiny",
                        "conditioning.image=https://example.org/picture.png"), tmp_path / "job")
    assert "conditioning.image='https://example.org/picture.png'" in str(error.value)
    assert "HF_HUB_OFFLINE" in str(error.value)


def test_inpainting_model_without_inpaint_conditioning_is_refused(tiny_zoo, tmp_path):
    with pytest.raises(UserError, match="inpainting model"):
        run(make_config("model=sdxl_inpaint", "zoo=tiny", "sampling.height=64", "sampling.width=64"), tmp_path / "j")


@pytest.mark.slow
def test_a_sweep_over_experiments_reports_the_experiment_as_its_one_parameter(tiny_zoo, tmp_path, fresh_cache):
    """Each experiment sets its own prompt, steps, seed and conditioning: the report's axis is the
    experiment, not every key it sets (whose product of values once stalled the report)."""
    import csv

    from runner.commands import lcm_run
    from benchmarks.bench import run_hydra

    sweep = tmp_path / "sweep"
    run_hydra(lcm_run.run_app, ["zoo=tiny", "device=cpu", "experiment=t2i,controlnet_canny", "sampling.height=64",
                            "sampling.width=64", f"hydra.sweep.dir={sweep}"])
    with open(sweep / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["job", "experiment", "seed", "file", "status", "time", "error"]
    assert [(row["experiment"], row["status"]) for row in rows] == [("t2i", "ok"), ("controlnet_canny", "ok")]
    assert (sweep / "contact_sheet.png").is_file() and (sweep / "index.html").is_file()
