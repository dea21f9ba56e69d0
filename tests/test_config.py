"""Composition of every config option, the schema, and validation before anything loads."""
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from tests.helpers import CONF, make_config
from runner.errors import UserError
from runner.config import prompt_sets
from runner.config.job_plan import plan_job

GROUPS = ["model", "scheduler", "lora", "conditioning", "device", "paths", "zoo", "experiment", "prompts", "metrics"]
# What an option needs beside itself to plan a job: a prompt set's file and row, a metric's workflow.
NEEDS = {("prompts", "file"): [f"prompts.path={prompt_sets.BUILTIN}", "prompt=people-1"],
         ("prompts", "builtin"): ["prompt=people-1"],
         ("metrics", "edge_f1"): ["experiment=controlnet_canny"], ("metrics", "masked_psnr"): ["experiment=inpaint"],
         # a base and its LoRAs and ControlNets come in families (the LCM-LoRA default is SDXL's)
         ("model", "sdxl_inpaint"): ["conditioning=inpaint"],  # an inpainting base takes nothing else
         ("model", "sd15"): ["lora=lcm_sd15"], ("model", "sd15_inpaint"): ["lora=lcm_sd15", "conditioning=inpaint"],
         ("model", "ssd_1b"): ["lora=lcm_ssd1b"], ("lora", "lcm_sd15"): ["model=sd15"],
         ("lora", "lcm_ssd1b"): ["model=ssd_1b"], ("conditioning", "controlnet_canny_sd15"): ["model=sd15", "lora=lcm_sd15"]}


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_of_every_group_composes_and_plans(group, option, tiny_zoo):
    cfg = make_config(f"{group}={option}", "zoo=tiny" if group != "zoo" else f"zoo={option}",
                      *NEEDS.get((group, option), []))
    OmegaConf.to_container(cfg.sampling, resolve=True, throw_on_missing=True)
    if cfg.zoo.name == "tiny":
        plan = plan_job(cfg)
        assert plan.base.origin == "zoo"


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"config group {group} has no options"


def test_defaults_are_the_cards_text_to_image_example():
    cfg = make_config()
    assert cfg.model.source == "stabilityai/stable-diffusion-xl-base-1.0"
    assert cfg.model.variant == "fp16"
    assert cfg.scheduler._target_ == "diffusers.LCMScheduler.from_config"
    assert list(cfg.lora) == ["lcm"] and cfg.lora.lcm.source == "latent-consistency/lcm-lora-sdxl"
    assert cfg.fuse_lora is True
    assert cfg.sampling.steps == 4 and cfg.sampling.guidance_scale == 0
    assert cfg.sampling.prompt == "Self-portrait oil painting, a beautiful cyborg with golden hair, 8k"
    assert (cfg.sampling.height, cfg.sampling.width) == (None, None)  # the base's own size (1024 for SDXL)


def test_tiny_zoo_maps_every_hub_reference_and_shrinks_the_size(tiny_zoo):
    from runner import zoo

    cfg = make_config("zoo=tiny", "lora=lcm_papercut")
    plan = plan_job(cfg)
    assert (plan.call["height"], plan.call["width"]) == (zoo.TINY_HEIGHT, zoo.TINY_WIDTH)  # the twin's own size
    assert Path(plan.base.path) == tiny_zoo / "sdxl-base"
    files = {a.name: Path(a.source.file) for a in plan.adapters}
    assert files == {"lcm": tiny_zoo / "lcm-lora-sdxl" / "pytorch_lora_weights.safetensors",
                     "papercut": tiny_zoo / "papercut" / "papercut.safetensors"}
    for twin in cfg.zoo.twins.values():
        assert (tiny_zoo / twin).exists(), twin


def test_cli_size_override_wins_over_the_tiny_zoo_size():
    cfg = make_config("zoo=tiny", "sampling.height=64")
    assert cfg.sampling.height == 64


@pytest.mark.parametrize("override,message", [
    ("sampling.stepz=4", "stepz"),
    ("sampling.steps=four", "four"),
    ("lora.lcm.wieght=0.5", "wieght"),
    ("scheduler=nope", "nope"),
    ("experiment=nope", "nope"),
])
def test_schema_rejects_unknown_keys_options_and_wrong_types(override, message):
    with pytest.raises(ConfigCompositionException) as error:
        make_config(override)
    assert message in str(error.value) + str(error.value.__cause__)


@pytest.mark.parametrize("override,message", [
    ("sampling.steps=0", "sampling.steps=0"),
    ("sampling.guidance_scale=-1", "sampling.guidance_scale=-1"),
    ("sampling.height=100", "sampling.height=100"),
    ("sampling.width=1001", "sampling.width=1001"),
    ("sampling.num_images=0", "sampling.num_images=0"),
    ("sampling.seed=-3", "sampling.seed=-3"),
    ("device.type=tpu", "device.type='tpu'"),
    ("device.dtype=float8", "device.dtype='float8'"),
    ("scheduler._target_=os.system", "scheduler._target_='os.system'"),
])
def test_out_of_range_values_are_named_with_their_key(override, message):
    with pytest.raises(UserError) as error:
        plan_job(make_config("zoo=tiny", override))
    assert message in str(error.value)


def test_all_problems_are_reported_together():
    with pytest.raises(UserError) as error:
        plan_job(make_config("zoo=tiny", "sampling.steps=0", "sampling.height=12"))
    assert "sampling.steps=0" in str(error.value) and "sampling.height=12" in str(error.value)


def test_missing_local_paths_are_named(tmp_path):
    missing = tmp_path / "nowhere" / "sdxl"
    with pytest.raises(UserError) as error:
        plan_job(make_config(f"model.source={missing}"))
    assert f"model.source='{missing}'" in str(error.value) and "does not exist" in str(error.value)


def test_lora_folder_without_its_weight_file_is_named(tmp_path):
    (tmp_path / "style").mkdir()
    with pytest.raises(UserError) as error:
        plan_job(make_config("zoo=tiny", f"lora.lcm.source={tmp_path / 'style'}",
                             "lora.lcm.weight_name=style.safetensors"))
    assert "lora.lcm.source" in str(error.value) and "style.safetensors" in str(error.value)


def test_uncached_hub_model_offline_says_how_to_get_it(empty_hub_cache):
    with pytest.raises(UserError) as error:
        plan_job(make_config())
    message = str(error.value)
    assert "stabilityai/stable-diffusion-xl-base-1.0" in message
    assert "HF_HUB_OFFLINE" in message and "hf download" in message and "zoo=tiny" in message


def test_unknown_hub_id_under_tiny_zoo_is_named():
    with pytest.raises(UserError) as error:
        plan_job(make_config("zoo=tiny", "model.source=someone/other-model"))
    assert "someone/other-model" in str(error.value) and "tiny zoo" in str(error.value)
