"""The knobs beyond the card: img2img, TCD and eta, CLIP skip, guidance rescale, SDXL's second
prompts, LCM's original_inference_steps, compel's prompt weighting and long prompts — each equal to
diffusers (and compel) called by hand on the tiny zoo, and each refused before any load when it
cannot work."""
import inspect
import json
import logging
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch
from diffusers import LCMScheduler, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline, TCDScheduler
from diffusers.utils import load_image
from PIL import Image

from runner.config import knobs
from runner.config.job_plan import plan_job
from runner.config.prompt_syntax import a1111_to_compel
from runner.engine.state import ENGINE
from runner.errors import UserError
from runner.outputs.png_metadata import read_png_metadata
from runner.run import run
from tests.helpers import make_config

F32 = torch.float32
PROMPT = "Self-portrait oil painting, a beautiful cyborg with golden hair, 8k"  # the default prompt
LONG = ", ".join(["a red fox in a snowy forest at dawn", "soft light", "film grain"] * 8)


def pixels(record, job):
    return np.asarray(Image.open(job / record["images"][0]["file"]).convert("RGB"), dtype=np.int16)


def as_array(image):
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def hand_pipe(tiny_zoo):
    """SDXL with LCM-LoRA fused and LCMScheduler, built by hand as the card does."""
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_zoo / "sdxl-base"), torch_dtype=F32)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(str(tiny_zoo / "lcm-lora-sdxl"))
    pipe.fuse_lora()
    return pipe


def by_hand(pipe, prompt=PROMPT, **keywords):
    return as_array(pipe(prompt=prompt, num_inference_steps=4, height=256, width=256,
                         generator=torch.Generator("cpu").manual_seed(0), **keywords).images[0])


# --- image-to-image ------------------------------------------------------------------------------


def test_img2img_equals_diffusers_by_hand_and_records_what_it_fed(tiny_zoo, tmp_path, fresh_cache):
    job = tmp_path / "job"
    record = run(make_config("experiment=img2img", "zoo=tiny", "device=cpu"), job)
    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(str(tiny_zoo / "sdxl-base"), torch_dtype=F32)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(str(tiny_zoo / "lcm-lora-sdxl"))
    pipe.fuse_lora()
    init_image = load_image(str(tiny_zoo / "images/img2img-init.png")).resize((256, 256))
    expected = pipe("Astronauts in a jungle, cold color palette, muted colors, detailed, 8k", image=init_image,
                    num_inference_steps=4, guidance_scale=1, strength=0.6,
                    generator=torch.Generator("cpu").manual_seed(0)).images[0]
    assert np.array_equal(pixels(record, job), as_array(expected))
    assert record["pipeline"] == "StableDiffusionXLImg2ImgPipeline"
    assert record["call"]["strength"] == 0.6 and "height" not in record["call"]
    assert record["inputs"]["image"] == "inputs/image.png"
    assert np.array_equal(as_array(Image.open(job / "inputs/image.png")), as_array(init_image))
    parameters = read_png_metadata(job / record["images"][0]["file"])["parameters"]
    assert parameters["Denoising strength"] == "0.6" and parameters["Size"] == "256x256"


@pytest.mark.slow
def test_a_strength_sweep_draws_each_strength_and_reproduces(tiny_zoo, tmp_path, fresh_cache):
    import csv

    from benchmarks.bench import run_hydra
    from runner.commands import lcm_run
    from runner.commands.lcm_reproduce import reproduce

    sweep = tmp_path / "sweep"
    run_hydra(lcm_run.run_app, ["experiment=img2img", "zoo=tiny", "sampling.steps=2", "sampling.height=128",
                                "sampling.width=128", "conditioning.strength=0.5,1.0", f"hydra.sweep.dir={sweep}"])
    records = {r["call"]["strength"]: r for r in (json.loads(p.read_text()) for p in sweep.glob("*/run.json"))}
    assert set(records) == {0.5, 1.0} and all(r["status"] == "ok" for r in records.values())
    folders = {s: Path(r["config"]["paths"]["output_dir"]) for s, r in records.items()}
    assert np.abs(pixels(records[0.5], folders[0.5]) - pixels(records[1.0], folders[1.0])).mean() > 5
    assert all((folders[s] / "inputs/image.png").is_file() for s in records)
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert sorted(float(row["conditioning.strength"]) for row in rows) == [0.5, 1.0]
    again = reproduce(folders[0.5] / records[0.5]["images"][0]["file"], [], tmp_path / "again")
    assert again["reproduced_from"]["pixels_equal"] is True
    assert again["inputs"]["image"] == "inputs/image.png" and again["call"]["strength"] == 0.5


@pytest.mark.parametrize("steps,strength", [(4, 0.2), (1, 0.9)])
def test_img2img_that_runs_no_step_is_refused_before_any_load(steps, strength, tmp_path, fresh_cache):
    cfg = make_config("experiment=img2img", "zoo=tiny", f"sampling.steps={steps}", f"conditioning.strength={strength}")
    with pytest.raises(UserError) as error:
        run(cfg, tmp_path / "job")
    message = str(error.value)
    assert f"conditioning.strength={strength}" in message and f"sampling.steps={steps}" in message
    assert "runs no denoising step" in message
    assert not ENGINE.loaded_pipelines() and not (tmp_path / "job").exists()


# --- TCD and eta ---------------------------------------------------------------------------------


def test_the_eta_table_agrees_with_diffusers_step_signatures():
    checked = 0
    for name in dir(diffusers):
        if not name.endswith("Scheduler"):
            continue
        try:
            step = getattr(diffusers, name).step
        except (ImportError, AttributeError):  # a scheduler needing an optional backend (torchsde...)
            continue
        assert ("eta" in inspect.signature(step).parameters) == (name in knobs.TAKES_ETA), name
        checked += 1
    assert checked > 30 and {"TCDScheduler", "DDIMScheduler"} <= knobs.TAKES_ETA


@pytest.mark.parametrize("scheduler,name", [("lcm", "LCMScheduler"), ("euler_a", "EulerAncestralDiscreteScheduler")])
def test_eta_on_a_scheduler_without_it_is_refused_before_any_load(scheduler, name, tmp_path, fresh_cache):
    with pytest.raises(UserError) as error:
        run(make_config("zoo=tiny", f"scheduler={scheduler}", "sampling.eta=0.3"), tmp_path / "job")
    assert f"sampling.eta=0.3 is not used by {name}" in str(error.value) and "scheduler=tcd" in str(error.value)
    assert not ENGINE.loaded_pipelines() and not (tmp_path / "job").exists()


def test_tcd_lora_with_eta_equals_diffusers_by_hand(tiny_zoo, tmp_path, fresh_cache):
    job = tmp_path / "job"
    record = run(make_config("zoo=tiny", "lora=tcd", "scheduler=tcd", "sampling.eta=0.3"), job)
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_zoo / "sdxl-base"), torch_dtype=F32)
    pipe.scheduler = TCDScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(str(tiny_zoo / "tcd-lora-sdxl"))
    pipe.fuse_lora()
    assert np.array_equal(pixels(record, job), by_hand(pipe, guidance_scale=0, eta=0.3))
    assert not np.array_equal(pixels(record, job), by_hand(pipe, guidance_scale=0, eta=0.0)), "eta should matter"
    assert record["call"]["eta"] == 0.3 and record["adapters"][0]["file"].endswith("tcd-lora-sdxl/pytorch_lora_weights.safetensors")
    assert read_png_metadata(job / record["images"][0]["file"])["parameters"]["Eta"] == "0.3"


# --- CLIP skip, guidance rescale, SDXL's second prompts, original_inference_steps -----------------

KNOBS = {  # override -> the keywords diffusers is called with by hand
    "clip_skip": (["sampling.clip_skip=1"], dict(guidance_scale=0, clip_skip=1)),
    "guidance_rescale": (["sampling.guidance_scale=3", "sampling.negative_prompt=blurry", "sampling.guidance_rescale=0.7"],
                         dict(guidance_scale=3, negative_prompt="blurry", guidance_rescale=0.7)),
    "prompt_2": (["sampling.prompt_2=a watercolour of a lighthouse"],
                 dict(guidance_scale=0, prompt_2="a watercolour of a lighthouse")),
    "negative_prompt_2": (["sampling.guidance_scale=3", "sampling.negative_prompt=blurry",
                           "sampling.negative_prompt_2='grainy, dark'"],
                          dict(guidance_scale=3, negative_prompt="blurry", negative_prompt_2="grainy, dark")),
}


@pytest.mark.parametrize("knob", sorted(KNOBS))
def test_each_knob_equals_diffusers_by_hand_and_is_recorded(knob, hand_pipe, tiny_zoo, tmp_path):
    overrides, keywords = KNOBS[knob]
    job = tmp_path / "job"
    record = run(make_config("zoo=tiny", *overrides), job)
    assert np.array_equal(pixels(record, job), by_hand(hand_pipe, **keywords))
    without = {k: v for k, v in keywords.items() if k != knob}
    assert np.abs(pixels(record, job) - by_hand(hand_pipe, **without)).mean() > 0.5, f"{knob} should change the image"
    assert record["call"][knob] == keywords[knob]
    saved = json.loads((job / "run.json").read_text())
    assert saved["call"][knob] == keywords[knob] and saved["config"]["sampling"][knob] == keywords[knob]
    if knob == "clip_skip":  # diffusers' clip_skip=1 on SDXL reads A1111's "Clip skip: 3"
        assert read_png_metadata(job / record["images"][0]["file"])["parameters"]["Clip skip"] == "3"


def test_clip_skip_beyond_the_encoders_is_refused(tiny_zoo, tmp_path):
    with pytest.raises(UserError, match=r"sampling.clip_skip=5 skips more layers .* at most 2"):
        run(make_config("zoo=tiny", "sampling.clip_skip=5"), tmp_path / "job")


def test_original_inference_steps_is_the_schedulers_and_recorded(hand_pipe, tiny_zoo, tmp_path):
    job = tmp_path / "job"
    record = run(make_config("zoo=tiny", "scheduler.original_inference_steps=20"), job)
    assert record["scheduler"]["config"]["original_inference_steps"] == 20
    kept = hand_pipe.scheduler
    try:
        hand_pipe.scheduler = LCMScheduler.from_config(kept.config, original_inference_steps=20)
        assert np.array_equal(pixels(record, job), by_hand(hand_pipe, guidance_scale=0))
    finally:
        hand_pipe.scheduler = kept
    # 20 picks timesteps 999, 749, 499, 249; the default 50 picks 999, 759, 519, 279: close, not equal
    assert np.abs(pixels(record, job) - by_hand(hand_pipe, guidance_scale=0)).mean() > 0.1


@pytest.mark.parametrize("overrides,message", [
    (["sampling.steps=8", "scheduler.original_inference_steps=6"],
     "sampling.steps=8 is more than scheduler.original_inference_steps=6"),
    (["sampling.guidance_rescale=1.5"], "sampling.guidance_rescale=1.5 must be between 0 and 1"),
    (["sampling.eta=-0.1", "scheduler=tcd"], "sampling.eta=-0.1 must be between 0 and 1"),
    (["sampling.clip_skip=0"], "sampling.clip_skip=0 must be at least 1"),
    (["sampling.prompt_syntax=a1111"], "sampling.prompt_syntax='a1111' is not one of plain, compel"),
    (["sampling.prompt_syntax=compel", "sampling.clip_skip=2"],
     "sampling.clip_skip=2 cannot be used with sampling.prompt_syntax=compel"),
])
def test_bad_knob_values_are_named_at_planning(overrides, message):
    with pytest.raises(UserError) as error:
        plan_job(make_config("zoo=tiny", *overrides))
    assert message in str(error.value)


# --- prompt syntax: compel and the truncation warning -------------------------------------------


@pytest.mark.parametrize("written,compel", [
    ("a (cat:1.5) on a mat", "a (cat)1.5 on a mat"),
    ("(cat)", "(cat)1.1"),
    ("[fog]", "(fog)0.909091"),
    ("((cat))", "((cat)1.1)1.1"),
    ("[a (b:1.3) c]", "(a (b)1.3 c)0.909091"),
    ("(cat)1.5 and a dog+", "(cat)1.5 and a dog+"),  # compel's own syntax is left alone
    ('("a cat", "a dog").blend(0.7, 0.3)', '("a cat", "a dog").blend(0.7, 0.3)'),
    (r"a \(literal\) word", r"a \(literal\) word"),
    ("a (half open", r"a \(half open"),
    ("no syntax at all", "no syntax at all"),
])
def test_a1111_syntax_is_written_as_compels(written, compel):
    assert a1111_to_compel(written) == compel


def run_pixels(tmp_path, name, *overrides):
    record = run(make_config("zoo=tiny", "sampling.steps=2", *overrides), tmp_path / name)
    return record, pixels(record, tmp_path / name)


def test_compel_weights_equal_compel_by_hand_and_a_plain_prompt_is_unchanged(hand_pipe, tiny_zoo, tmp_path):
    from compel import CompelForSDXL

    compel = ["sampling.prompt_syntax=compel"]
    _, plain = run_pixels(tmp_path, "plain", "sampling.prompt='a cat on a mat'")
    _, same = run_pixels(tmp_path, "same", "sampling.prompt='a cat on a mat'", *compel)
    _, neutral = run_pixels(tmp_path, "neutral", "sampling.prompt='a (cat:1.0) on a mat'", *compel)
    weighted_record, weighted = run_pixels(tmp_path, "weighted", "sampling.prompt='a (cat:1.5) on a mat'", *compel)
    _, compels_own = run_pixels(tmp_path, "own", "sampling.prompt='a (cat)1.5 on a mat'", *compel)
    assert np.array_equal(same, plain), "a prompt without weights draws as under plain"
    assert np.array_equal(neutral, plain), "a weight of 1 changes nothing"
    # one token of eight weighted: a small change on the tiny twins' attention, but a change
    assert np.abs(weighted - plain).mean() > 0.05, "(cat:1.5) should change the image"
    assert np.array_equal(weighted, compels_own)
    compel_by_hand = CompelForSDXL(hand_pipe, device="cpu")
    made = compel_by_hand("a (cat)1.5 on a mat")
    # pooled from the words: compel would pool the syntax characters too, so that (cat)1 changed the image
    pooled = compel_by_hand.compel_2.conditioning_provider.get_pooled_embeddings(["a cat on a mat"], device="cpu")
    assert not torch.equal(pooled, made.pooled_embeds)
    expected = as_array(hand_pipe(prompt_embeds=made.embeds, pooled_prompt_embeds=pooled,
                                  num_inference_steps=2, guidance_scale=0, height=256, width=256,
                                  generator=torch.Generator("cpu").manual_seed(0)).images[0])
    assert np.array_equal(weighted, expected)
    assert weighted_record["call"]["prompt"] == "a (cat:1.5) on a mat"  # as the user wrote it
    again, _ = run_pixels(tmp_path, "again", "sampling.prompt='a (cat:1.5) on a mat'", "sampling.seed=1", *compel)
    assert again["prompt_embeddings"] == "cached"


def test_a_long_prompt_warns_once_under_plain_and_is_kept_whole_under_compel(tiny_zoo, tmp_path, caplog, fresh_cache):
    from transformers import CLIPTokenizer

    tokens = len(CLIPTokenizer.from_pretrained(str(tiny_zoo / "sdxl-base" / "tokenizer"))(LONG).input_ids)
    assert tokens > 77
    with caplog.at_level(logging.WARNING, logger="lcm-run"):
        _, cut = run_pixels(tmp_path, "plain", f"sampling.prompt='{LONG}'")
        run_pixels(tmp_path, "plain-seed1", f"sampling.prompt='{LONG}'", "sampling.seed=1")
    warnings = [r.getMessage() for r in caplog.records if "CLIP reads" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once per prompt, not once per job
    assert f"its last {tokens - 77} tokens are dropped" in warnings[0]
    assert "sampling.prompt_syntax=compel keeps them" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lcm-run"):
        _, whole = run_pixels(tmp_path, "compel", f"sampling.prompt='{LONG}'", "sampling.prompt_syntax=compel",
                              "sampling.guidance_scale=3", "sampling.negative_prompt=blurry")
    assert not [r for r in caplog.records if "CLIP reads" in r.getMessage()]
    _, cut_cfg = run_pixels(tmp_path, "plain-cfg", f"sampling.prompt='{LONG}'", "sampling.guidance_scale=3",
                            "sampling.negative_prompt=blurry")
    assert np.abs(whole - cut_cfg).mean() > 0.5, "compel should read the tokens past 77"


def test_a_batch_whose_compel_prompts_differ_in_length_draws_each_as_alone(tiny_zoo, tmp_path, fresh_cache):
    """The sweeper batches jobs that differ only in prompt; compel encodes a long prompt to more
    tokens than a short one, so such a batch generates its jobs one by one."""
    from runner.sweep import batching
    from runner.sweep.handoff import HANDOFF

    small = ["zoo=tiny", "sampling.steps=1", "sampling.height=64", "sampling.width=64", "sampling.prompt_syntax=compel"]
    configs = [make_config(*small, f"sampling.prompt='{text}'") for text in ("a (cat:1.3)", LONG)]
    alone = [pixels(run(cfg, tmp_path / f"alone{i}"), tmp_path / f"alone{i}") for i, cfg in enumerate(configs)]
    try:
        batching.expect(configs)
        batched = [run(cfg, tmp_path / f"batch{i}") for i, cfg in enumerate(configs)]
    finally:
        HANDOFF.reset()
    assert [r["status"] for r in batched] == ["ok", "ok"] and not any("batch" in r for r in batched)
    for i, record in enumerate(batched):
        assert np.array_equal(pixels(record, tmp_path / f"batch{i}"), alone[i])
