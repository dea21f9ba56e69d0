"""The card's other bases: Stable Diffusion 1.5 and SSD-1B with their own LCM-LoRAs. The family is
read from the base's files; each experiment equals diffusers called by hand on the tiny twins; a
LoRA, ControlNet or conditioning kind of another family is refused before anything loads."""
import json

import numpy as np
import pytest
import torch
from diffusers import (
    ControlNetModel,
    DiffusionPipeline,
    LCMScheduler,
    StableDiffusionControlNetPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
)
from diffusers.utils import load_image
from PIL import Image

from runner.config.families import lora_family, read_base
from runner.config.file_checks import safetensors_keys
from runner.config.job_plan import plan_job
from runner.config.sources import Source
from runner.engine.conditioning import canny_map
from runner.engine.state import ENGINE
from runner.errors import UserError
from runner.outputs.png_metadata import read_png_metadata
from runner.run import run
from tests.helpers import make_config

F32 = torch.float32
PROMPT = "Self-portrait oil painting, a beautiful cyborg with golden hair, 8k"  # the card's
SMALL = ("zoo=tiny", "device=cpu", "sampling.height=64", "sampling.width=64")


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def with_lcm_fused(pipe, lora_folder):
    """The card's code: LCMScheduler, the LCM-LoRA loaded and fused."""
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(str(lora_folder))
    pipe.fuse_lora()
    return pipe


@pytest.mark.parametrize("twin,family,size,inpainting", [
    ("sdxl-base", "sdxl", 256, False), ("sdxl-inpaint", "sdxl", 256, True), ("ssd-1b", "ssd_1b", 256, False),
    ("sd15-base", "sd15", 128, False), ("sd15-inpaint", "sd15", 128, True),
])
def test_the_family_and_size_are_read_from_the_bases_files(tiny_zoo, twin, family, size, inpainting):
    base = read_base(Source("model.source", twin, "local", str(tiny_zoo / twin)))
    assert (base.family.name, base.default_size, base.inpainting) == (family, size, inpainting)


def test_each_lcm_lora_twin_is_recognised_as_its_familys(tiny_zoo):
    found = {folder: lora_family(safetensors_keys("k", tiny_zoo / folder / "pytorch_lora_weights.safetensors"))
             for folder in ("lcm-lora-sdxl", "lcm-lora-ssd-1b", "lcm-lora-sdv1-5")}
    assert found == {"lcm-lora-sdxl": "sdxl", "lcm-lora-ssd-1b": "ssd_1b", "lcm-lora-sdv1-5": "sd15"}
    for folder in ("lcm-lora-ssd-1b", "lcm-lora-sdv1-5"):  # the diffusers/peft key format, as the real files
        keys = safetensors_keys("k", tiny_zoo / folder / "pytorch_lora_weights.safetensors")
        assert all(k.startswith("unet.") and k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys)
    assert lora_family(safetensors_keys("k", tiny_zoo / "papercut" / "papercut.safetensors")) == "sdxl"  # kohya keys


def card_t2i_sd15(zoo, size):
    pipe = with_lcm_fused(StableDiffusionPipeline.from_pretrained(str(zoo / "sd15-base"), dtype=F32,
                                                                  safety_checker=None), zoo / "lcm-lora-sdv1-5")
    return pipe(prompt=PROMPT, num_inference_steps=4, guidance_scale=0, height=size, width=size,
                generator=torch.Generator("cpu").manual_seed(0)).images[0]


def card_t2i_ssd1b(zoo, size):
    pipe = with_lcm_fused(DiffusionPipeline.from_pretrained(str(zoo / "ssd-1b"), dtype=F32), zoo / "lcm-lora-ssd-1b")
    return pipe(prompt=PROMPT, num_inference_steps=4, guidance_scale=0, height=size, width=size,
                generator=torch.Generator("cpu").manual_seed(0)).images[0]


@pytest.mark.parametrize("experiment,by_hand,size,pipeline,model", [
    ("t2i_sd15", card_t2i_sd15, 128, "StableDiffusionPipeline", "stable-diffusion-v1-5"),
    ("t2i_ssd1b", card_t2i_ssd1b, 256, "StableDiffusionXLPipeline", "SSD-1B"),
])
def test_experiment_pixels_equal_diffusers_by_hand(experiment, by_hand, size, pipeline, model, tiny_zoo, tmp_path):
    cfg = make_config(f"experiment={experiment}", "zoo=tiny", "device=cpu")
    record = run(cfg, tmp_path / "job")
    image = tmp_path / "job" / record["images"][0]["file"]
    assert np.array_equal(pixels(image), np.asarray(by_hand(tiny_zoo, size), dtype=np.int16))
    assert record["pipeline"] == pipeline and record["family"] == experiment.replace("t2i_", "").replace("ssd1b", "ssd_1b")
    assert (record["call"]["height"], record["call"]["width"], record["call"]["num_inference_steps"]) == (size, size, 4)
    assert (make_config(f"experiment={experiment}").sampling.height, record["fused"]) == (4 * size, True)
    a1111 = read_png_metadata(image)["parameters"]
    assert (a1111["Size-1"], a1111["Model"], a1111["Steps"], a1111["CFG scale"]) == (str(size), model, "4", "0.0")


@pytest.mark.slow
def test_sd15_inpainting_and_controlnet_equal_diffusers_by_hand(tiny_zoo, tmp_path):
    record = run(make_config("model=sd15_inpaint", "lora=lcm_sd15", "conditioning=inpaint", *SMALL), tmp_path / "inpaint")
    assert (record["pipeline"], record["family"]) == ("StableDiffusionInpaintPipeline", "sd15")
    pipe = with_lcm_fused(StableDiffusionInpaintPipeline.from_pretrained(
        str(tiny_zoo / "sd15-inpaint"), dtype=F32, safety_checker=None), tiny_zoo / "lcm-lora-sdv1-5")
    image = load_image(str(tiny_zoo / "images/inpaint.png")).resize((64, 64))
    mask = load_image(str(tiny_zoo / "images/inpaint_mask.png")).resize((64, 64))
    expected = pipe(prompt=PROMPT, image=image, mask_image=mask, strength=0.9999, num_inference_steps=4,
                    guidance_scale=0, height=64, width=64, generator=torch.Generator("cpu").manual_seed(0)).images[0]
    assert np.array_equal(pixels(tmp_path / "inpaint" / record["images"][0]["file"]), np.asarray(expected, dtype=np.int16))

    record = run(make_config("model=sd15", "lora=lcm_sd15", "conditioning=controlnet_canny_sd15", *SMALL),
                 tmp_path / "controlnet")
    assert record["pipeline"] == "StableDiffusionControlNetPipeline"
    assert record["components"]["controlnet"] == str(tiny_zoo / "controlnet-canny-sd15")
    controlnet = ControlNetModel.from_pretrained(str(tiny_zoo / "controlnet-canny-sd15"), dtype=F32)
    pipe = with_lcm_fused(StableDiffusionControlNetPipeline.from_pretrained(
        str(tiny_zoo / "sd15-base"), controlnet=controlnet, dtype=F32, safety_checker=None),
        tiny_zoo / "lcm-lora-sdv1-5")
    control = canny_map(load_image(str(tiny_zoo / "images/vermeer.png")).resize((64, 64)), 100, 200)
    expected = pipe(prompt=PROMPT, image=control, controlnet_conditioning_scale=0.5, num_inference_steps=4,
                    guidance_scale=0, height=64, width=64, generator=torch.Generator("cpu").manual_seed(0)).images[0]
    assert np.array_equal(pixels(tmp_path / "controlnet" / record["images"][0]["file"]), np.asarray(expected, dtype=np.int16))


WRONG_LORAS = [("sdxl_base", "lcm_sd15", "Stable Diffusion 1.5", "SDXL"), ("sdxl_base", "lcm_ssd1b", "SSD-1B", "SDXL"),
               ("ssd_1b", "lcm", "SDXL", "SSD-1B"), ("ssd_1b", "lcm_sd15", "Stable Diffusion 1.5", "SSD-1B"),
               ("sd15", "lcm", "SDXL", "Stable Diffusion 1.5"), ("sd15", "lcm_ssd1b", "SSD-1B", "Stable Diffusion 1.5")]


@pytest.mark.parametrize("model,lora,lora_family_label,base_family_label", WRONG_LORAS)
def test_a_lora_of_another_family_is_refused_before_any_load(model, lora, lora_family_label, base_family_label,
                                                              tiny_zoo, tmp_path, fresh_cache):
    with pytest.raises(UserError) as error:
        run(make_config(f"model={model}", f"lora={lora}", *SMALL), tmp_path / "job")
    message = str(error.value)
    assert lora_family_label in message.split(", not for")[0] and "lora.lcm.source" in message
    assert f"not for {base_family_label}, the family of model.source=" in message
    assert ENGINE.loaded_pipelines() == [] and not (tmp_path / "job").exists()


@pytest.mark.parametrize("overrides,expected", [
    (("model=sd15", "lora=lcm_sd15", "conditioning=t2i_adapter_canny"),
     "conditioning=t2i_adapter_canny does not exist for Stable Diffusion 1.5"),
    (("model=sd15", "lora=lcm_sd15", "conditioning=controlnet_canny"),
     "is a ControlNet for SDXL (and SSD-1B), but model.source='stable-diffusion-v1-5/stable-diffusion-v1-5' is of "
     "the Stable Diffusion 1.5 family"),
    (("model=ssd_1b", "lora=lcm_ssd1b", "conditioning=controlnet_canny_sd15"),
     "is a ControlNet for Stable Diffusion 1.5, but model.source='segmind/SSD-1B' is of the SSD-1B family"),
    (("model=sd15_inpaint", "lora=lcm_sd15", "conditioning=controlnet_canny_sd15"), "is an inpainting model"),
])
def test_a_conditioning_the_family_lacks_is_refused_before_any_load(overrides, expected, tiny_zoo, tmp_path, fresh_cache):
    with pytest.raises(UserError) as error:
        run(make_config(*overrides, *SMALL), tmp_path / "job")
    assert expected in str(error.value)
    assert ENGINE.loaded_pipelines() == [] and not (tmp_path / "job").exists()


def test_lcm_reproduce_of_an_sd15_image_is_exact(tiny_zoo, tmp_path):
    from runner.commands.lcm_reproduce import reproduce

    record = run(make_config("experiment=t2i_sd15", *SMALL, "sampling.steps=2", "sampling.num_images=2"), tmp_path / "job")
    image = tmp_path / "job" / record["images"][1]["file"]
    again = reproduce(image, out=tmp_path / "again")
    assert again["reproduced_from"]["pixels_equal"] is True
    assert (again["pipeline"], again["family"], again["call"]) == (record["pipeline"], "sd15", record["call"])


@pytest.mark.slow
def test_a_sweep_over_the_three_bases_loads_each_once(tiny_zoo, tmp_path, fresh_cache, capsys):
    from benchmarks.bench import run_hydra
    from runner.commands import lcm_run

    grid = ["zoo=tiny", "device=cpu", "experiment=t2i,t2i_sd15,t2i_ssd1b", "sampling.seed=0,1", "sampling.steps=1",
            "sampling.height=64", "sampling.width=64", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    with pytest.raises(SystemExit) as planned:
        run_hydra(lcm_run.run_app, [*grid, "plan=true"])
    assert planned.value.code == 0
    plan = capsys.readouterr().out
    for repo, twin, family in (("stabilityai/stable-diffusion-xl-base-1.0", "sdxl-base", "SDXL"),
                               ("stable-diffusion-v1-5/stable-diffusion-v1-5", "sd15-base", "Stable Diffusion 1.5"),
                               ("segmind/SSD-1B", "ssd-1b", "SSD-1B")):
        assert f"base {repo} ({tiny_zoo / twin}): loaded 1x ({family})" in plan, plan
    run_hydra(lcm_run.run_app, grid)
    records = [json.loads(path.read_text()) for path in sorted((tmp_path / "sweep").glob("*/run.json"))]
    assert len(records) == 6 and {r["status"] for r in records} == {"ok"}
    loads = sorted(r["family"] for r in records if r["cache"]["base"] == "miss")
    assert loads == ["sd15", "sdxl", "ssd_1b"]  # each base loaded once, its two seeds sharing it
    assert {(r["config"]["model"]["source"], r["pipeline"]) for r in records} == {
        ("stabilityai/stable-diffusion-xl-base-1.0", "StableDiffusionXLPipeline"),
        ("stable-diffusion-v1-5/stable-diffusion-v1-5", "StableDiffusionPipeline"),
        ("segmind/SSD-1B", "StableDiffusionXLPipeline")}


def test_a_base_of_no_known_family_is_named_before_any_load(tmp_path):
    folder = tmp_path / "flux"
    (folder / "transformer").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(UserError) as error:
        plan_job(make_config(f"model.source={folder}"))
    assert f"model.source='{folder}' is a FluxPipeline" in str(error.value)
    assert "SDXL, SSD-1B, Stable Diffusion 1.5" in str(error.value)


def test_the_unbuilt_zoos_table_says_what_each_built_twins_files_say(tiny_zoo):
    from runner.config import families

    for name, known in families.TWIN_BASES.items():
        assert families._read_base("model.source", name, str(tiny_zoo / name)) == families.BaseModel(*known), name
