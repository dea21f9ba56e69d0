"""Runs on the tiny zoo, checked against diffusers called by hand as the model card does."""
import gc
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import make_config
from runner.engine import models
from runner.run import run
from runner.engine.state import ENGINE


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def job_pixels(record, job_dir, index=0):
    return pixels(job_dir / record["images"][index]["file"])


def mean_change(a, b):
    return float(np.abs(a - b).mean())


def card_text_to_image(zoo_dir, height, width, seed=0):
    """The card's text-to-image code, on the tiny twins, with a seeded generator."""
    from diffusers import AutoPipelineForText2Image, LCMScheduler

    pipe = AutoPipelineForText2Image.from_pretrained(str(zoo_dir / "sdxl-base"), torch_dtype=torch.float32)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(str(zoo_dir / "lcm-lora-sdxl"))
    pipe.fuse_lora()
    prompt = "Self-portrait oil painting, a beautiful cyborg with golden hair, 8k"
    image = pipe(prompt=prompt, num_inference_steps=4, guidance_scale=0, height=height, width=width,
                 generator=torch.Generator("cpu").manual_seed(seed)).images[0]
    return np.asarray(image, dtype=np.int16)


def test_t2i_pixels_equal_the_cards_code_called_by_hand(tiny_zoo, tmp_path, fresh_cache):
    cfg = make_config("experiment=t2i", "zoo=tiny", "device=cpu")
    record = run(cfg, tmp_path / "job")
    expected = card_text_to_image(tiny_zoo, cfg.sampling.height, cfg.sampling.width)
    assert np.array_equal(job_pixels(record, tmp_path / "job"), expected)
    assert expected.std() > 5, "the tiny zoo should draw structure, not a flat image"


def test_run_json_records_everything_needed_to_rebuild_the_call(tiny_zoo, tmp_path, fresh_cache):
    job = tmp_path / "job"
    run(make_config("zoo=tiny", "sampling.num_images=2", "sampling.seed=7", "sampling.negative_prompt=blurry"), job)
    record = json.loads((job / "run.json").read_text())
    assert record["status"] == "ok" and record["error"] is None
    assert record["pipeline"] == "StableDiffusionXLPipeline"
    assert record["components"] == {"base": str(tiny_zoo / "sdxl-base")}
    assert record["cache"] == {"base": "miss"}
    assert record["scheduler"]["class"] == "LCMScheduler"
    assert record["scheduler"]["config"]["beta_schedule"] == "scaled_linear"
    assert record["adapters"] == [{
        "name": "lcm", "source": "latent-consistency/lcm-lora-sdxl", "cache": "miss", "hotswap": False, "weight": 1.0,
        "file": str(tiny_zoo / "lcm-lora-sdxl" / "pytorch_lora_weights.safetensors")}]
    assert record["fused"] is True
    assert record["call"] == {
        "prompt": "Self-portrait oil painting, a beautiful cyborg with golden hair, 8k",
        "negative_prompt": "blurry", "num_inference_steps": 4, "guidance_scale": 0.0,
        "height": 256, "width": 256, "num_images_per_prompt": 2}
    assert record["images"] == [{"file": "image_00_seed7.png", "seed": 7, "index": 0},
                                {"file": "image_01_seed8.png", "seed": 8, "index": 1}]
    assert record["config"]["sampling"]["seed"] == 7 and record["config"]["paths"]["output_dir"] == str(job)
    assert {"torch", "diffusers", "peft", "python"} <= set(record["versions"])
    assert {"load", "prepare", "generate", "save", "total"} <= set(record["timings"])
    assert record["inputs"] == {}
    for image in record["images"]:
        assert Image.open(job / image["file"]).size == (256, 256)


def test_a_prompt_is_encoded_once_and_its_embeddings_give_the_same_pixels(tiny_zoo, tmp_path, fresh_cache):
    first = run(make_config("zoo=tiny", "sampling.steps=2"), tmp_path / "a")
    second = run(make_config("zoo=tiny", "sampling.steps=2", "sampling.seed=1"), tmp_path / "b")
    other = run(make_config("zoo=tiny", "sampling.steps=2", "sampling.prompt=a red car"), tmp_path / "c")
    assert [r["prompt_embeddings"] for r in (first, second, other)] == ["encoded", "cached", "encoded"]
    ENGINE.reset()
    cold = run(make_config("zoo=tiny", "sampling.steps=2", "sampling.seed=1"), tmp_path / "d")
    assert cold["prompt_embeddings"] == "encoded"
    assert np.array_equal(job_pixels(second, tmp_path / "b"), job_pixels(cold, tmp_path / "d"))


def test_image_i_uses_seed_plus_i(tiny_zoo, tmp_path, fresh_cache):
    pair = run(make_config("zoo=tiny", "sampling.num_images=2", "sampling.seed=3"), tmp_path / "pair")
    single = run(make_config("zoo=tiny", "sampling.seed=4"), tmp_path / "single")
    second = job_pixels(pair, tmp_path / "pair", 1)
    assert mean_change(second, job_pixels(single, tmp_path / "single")) <= 1.0
    assert mean_change(second, job_pixels(pair, tmp_path / "pair", 0)) > 5


def test_lora_weight_change_changes_the_image_without_reloading(tiny_zoo, tmp_path, fresh_cache):
    live = ("zoo=tiny", "fuse_lora=false")
    full = run(make_config(*live, "lora.lcm.weight=1.0"), tmp_path / "w1")
    off = run(make_config(*live, "lora.lcm.weight=0.0"), tmp_path / "w0")
    assert off["cache"] == {"base": "hit"} and off["adapters"][0]["cache"] == "hit"
    assert mean_change(job_pixels(full, tmp_path / "w1"), job_pixels(off, tmp_path / "w0")) >= 5


def test_refusing_then_refusing_back_restores_exact_weights(tiny_zoo, tmp_path, fresh_cache):
    """A fused stack whose weight changes is re-fused from saved weights: job order never matters."""
    first = run(make_config("zoo=tiny", "lora.lcm.weight=1.0"), tmp_path / "a")
    run(make_config("zoo=tiny", "lora.lcm.weight=0.5"), tmp_path / "b")
    run(make_config("zoo=tiny", "fuse_lora=false", "lora.lcm.weight=0.3"), tmp_path / "c")
    again = run(make_config("zoo=tiny", "lora.lcm.weight=1.0"), tmp_path / "d")
    assert again["cache"] == {"base": "hit"}
    assert np.array_equal(job_pixels(first, tmp_path / "a"), job_pixels(again, tmp_path / "d"))


# bfloat16: the files' float32 is cast at load; channels_last: restored into weights laid out otherwise
@pytest.mark.parametrize("dtype, channels_last", [("float32", False), ("bfloat16", False), ("float32", True)])
def test_a_fused_stack_keeps_no_weight_copy_until_it_changes(dtype, channels_last, tiny_zoo, tmp_path, fresh_cache,
                                                             monkeypatch):
    """The weights a fused LoRA changed come back from the model's files, read once, at the first
    change of the fused stack: before it, the process holds no second copy of them."""
    from runner.engine import lora

    reads = []
    monkeypatch.setattr(lora, "as_loaded", lambda loaded, component: reads.append(component) or
                        models.as_loaded(loaded, component))
    common = ("zoo=tiny", "sampling.steps=2", "sampling.height=64", "sampling.width=64", f"device.dtype={dtype}",
              f"device.channels_last={channels_last}")
    jobs = {"a": ("lora.lcm.weight=1.0",), "a2": ("lora.lcm.weight=1.0", "sampling.seed=3"),
            "b": ("lora.lcm.weight=0.5",), "c": ("lora=lcm_papercut",), "d": ("lora.lcm.weight=1.0",)}
    warm = {}
    for name, overrides in jobs.items():
        record = run(make_config(*common, *overrides), tmp_path / name)
        warm[name] = job_pixels(record, tmp_path / name)
        loaded = ENGINE.loaded_pipelines()[0]
        if name == "a2":
            assert loaded.pristine == {} and reads == [], "one fused stack: nothing read, nothing copied"
    assert reads == ["unet"], "read once, at the first change, and kept"
    for name in ("b", "c", "d"):
        ENGINE.reset()
        cold = run(make_config(*common, *jobs[name]), tmp_path / f"cold-{name}")
        assert np.array_equal(job_pixels(cold, tmp_path / f"cold-{name}"), warm[name]), name
    assert np.array_equal(warm["a"], warm["d"])


def _mapped_from(path):
    """The address ranges of this process mapped from the file at `path` (Linux's /proc/self/maps)."""
    ranges = []
    for line in open("/proc/self/maps"):
        fields = line.split()
        if len(fields) >= 6 and fields[5] == str(path):
            start, end = (int(bound, 16) for bound in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc/self/maps")
def test_a_fused_model_is_copied_out_of_its_file_first(tiny_zoo, tmp_path, fresh_cache):
    """runner.engine.lora._own_weights: the UNet a LoRA is fused into no longer maps its safetensors file
    (fusing into the mapping copies it page by page); with live adapters it still does."""
    file = (tiny_zoo / "sdxl-base" / "unet" / "diffusion_pytorch_model.safetensors").resolve()

    def mapped(fused):
        run(make_config("zoo=tiny", "sampling.steps=1", "sampling.height=64", "sampling.width=64",
                        f"fuse_lora={str(fused).lower()}"), tmp_path / str(fused))
        gc.collect()
        return _mapped_from(file)

    assert mapped(fused=False), "loaded memory-mapped: the check can see it"
    ENGINE.reset()
    assert mapped(fused=True) == []


def test_a_model_read_from_its_files_fuses_as_one_copied_through_the_mapping(tiny_zoo, tmp_path, fresh_cache,
                                                                           monkeypatch):
    """runner.engine.file_copies reads every weight of the tiny zoo's UNet from its file (they are all below
    its size threshold otherwise): the fused pixels equal those of a copy made with clone()."""
    from runner.engine import file_copies

    overrides = ("zoo=tiny", "sampling.steps=2", "sampling.height=64", "sampling.width=64")
    drawn = {}
    for name, threshold in (("read", 1), ("cloned", 1 << 62)):
        monkeypatch.setattr(file_copies, "READ_FROM_FILE_FROM", threshold)
        ENGINE.reset()
        drawn[name] = job_pixels(run(make_config(*overrides), tmp_path / name), tmp_path / name)
    assert np.array_equal(drawn["read"], drawn["cloned"])


def test_a_fused_stack_runs_without_peft_layers_and_changes_like_fresh_processes(tiny_zoo, tmp_path, fresh_cache):
    """Once fused, peft's layers are out of the model (runner.engine.lora._bypass_merged); they come back,
    unreloaded, for the next stack: a fused weight, live adapters, another stack."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    jobs = {"a": ("sampling.seed=1",), "b": ("lora.lcm.weight=0.5",), "c": ("fuse_lora=false", "lora.lcm.weight=0.3"),
            "d": ("lora=lcm_papercut",), "e": ()}
    warm, records = {}, {}
    for name, overrides in jobs.items():
        records[name] = run(make_config("zoo=tiny", "sampling.steps=2", *overrides), tmp_path / name)
        warm[name] = job_pixels(records[name], tmp_path / name)
        unet = ENGINE.loaded_pipelines()[0].pipe.unet
        peft_layers = sum(isinstance(module, BaseTunerLayer) for module in unet.modules())
        assert (peft_layers == 0) == records[name]["fused"], name
    assert [a["cache"] for name in "bce" for a in records[name]["adapters"]] == ["hit"] * 3, "nothing reloaded"
    for name, overrides in jobs.items():
        ENGINE.reset()
        cold = run(make_config("zoo=tiny", "sampling.steps=2", *overrides), tmp_path / f"cold-{name}")
        assert np.array_equal(job_pixels(cold, tmp_path / f"cold-{name}"), warm[name]), name
    assert mean_change(warm["b"], warm["e"]) >= 5 and mean_change(warm["c"], warm["e"]) >= 5


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="MKL's instruction-set switch is x86 only")
def test_a_fused_stack_changes_like_fresh_processes_on_kernels_that_round_by_alignment():
    """MKL's kernels on AMD processors (and its SSE4.2 path on any x86 CPU) round differently by
    operand alignment; there, a live stack after fused ones drew other pixels than in a fresh
    process until copied weights kept their file's alignment (runner.engine.file_copies)."""
    test = f"{__file__}::test_a_fused_stack_runs_without_peft_layers_and_changes_like_fresh_processes"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", test],
                            env={**os.environ, "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]


def test_stacks_switch_in_one_process_like_fresh_processes(tiny_zoo, tmp_path, fresh_cache):
    """LCM + papercut, then no LoRA at all, then LCM alone again: each equals a cold run."""
    stacked = run(make_config("zoo=tiny", "lora=lcm_papercut", "fuse_lora=false"), tmp_path / "s")
    none = run(make_config("zoo=tiny", "lora=none"), tmp_path / "n")
    lcm = run(make_config("zoo=tiny", "fuse_lora=false"), tmp_path / "l")
    warm = {name: job_pixels(r, tmp_path / name) for name, r in (("s", stacked), ("n", none), ("l", lcm))}
    assert none["adapters"] == [] and none["fused"] is False
    for name, overrides in (("s", ("lora=lcm_papercut", "fuse_lora=false")), ("n", ("lora=none",)),
                            ("l", ("fuse_lora=false",))):
        ENGINE.reset()
        cold = run(make_config("zoo=tiny", *overrides), tmp_path / f"cold-{name}")
        assert np.array_equal(job_pixels(cold, tmp_path / f"cold-{name}"), warm[name]), name
    assert mean_change(warm["s"], warm["l"]) >= 5, "papercut should change the image"


@pytest.mark.parametrize("scheduler", ["lcm", "tcd", "euler", "euler_a", "dpmpp_2m", "ddim"])
def test_every_scheduler_option_runs(scheduler, tiny_zoo, tmp_path):
    record = run(make_config("zoo=tiny", f"scheduler={scheduler}", "sampling.steps=2",
                             "sampling.height=64", "sampling.width=64"), tmp_path / scheduler)
    assert record["status"] == "ok"
    assert record["scheduler"]["config"]["beta_end"] == 0.012  # built from the model's own config
    if scheduler == "dpmpp_2m":
        assert record["scheduler"]["config"]["algorithm_type"] == "dpmsolver++"


def test_scheduler_override_with_a_typo_is_named(tiny_zoo, tmp_path):
    from runner.errors import UserError

    with pytest.raises(UserError, match=r"scheduler.timestep_spacin='trailing'"):
        run(make_config("zoo=tiny", "+scheduler.timestep_spacin=trailing"), tmp_path / "job")
    assert not list((tmp_path / "job").glob("*.png"))


def test_existing_results_are_never_overwritten(tiny_zoo, tmp_path):
    from runner.errors import UserError

    job = tmp_path / "job"
    run(make_config("zoo=tiny", "sampling.height=64", "sampling.width=64"), job)
    before = {p.name: p.read_bytes() for p in job.iterdir()}
    with pytest.raises(UserError, match="already holds"):
        run(make_config("zoo=tiny", "sampling.seed=5"), job)
    assert {p.name: p.read_bytes() for p in job.iterdir()} == before


def test_background_writes_give_the_same_files_and_record_failures(tiny_zoo, tmp_path, monkeypatch):
    from runner.outputs import records
    from runner.outputs.writers import BackgroundWriter

    small = ("zoo=tiny", "sampling.height=64", "sampling.width=64")
    direct = run(make_config(*small), tmp_path / "direct")
    writer = BackgroundWriter()
    queued = run(make_config(*small), tmp_path / "queued", writer=writer)
    writer.flush()
    on_disk = json.loads((tmp_path / "queued" / "run.json").read_text())
    assert on_disk["status"] == "ok" and on_disk["images"] == direct["images"] == queued["images"]
    assert np.array_equal(job_pixels(direct, tmp_path / "direct"), job_pixels(on_disk, tmp_path / "queued"))

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(records, "save_bytes", disk_full)  # how a job writes its images
    run(make_config(*small, "sampling.seed=3"), tmp_path / "full", writer=writer)  # returns: the write is queued
    writer.flush()
    failed = json.loads((tmp_path / "full" / "run.json").read_text())
    assert failed["status"] == "failed" and "No space left on device" in failed["error"]


def test_memory_options_keep_the_pixels(tiny_zoo, tmp_path, fresh_cache):
    small = ("zoo=tiny", "sampling.height=64", "sampling.width=64", "sampling.num_images=2")
    plain = run(make_config(*small), tmp_path / "plain")
    held = run(make_config(*small, "device.channels_last=true", "device.vae_slicing=true",
                           "device.vae_tiling=true"), tmp_path / "held")
    assert held["cache"] == {"base": "miss"}, "options that change how the pipeline is held reload it"
    for index in (0, 1):
        assert mean_change(job_pixels(plain, tmp_path / "plain", index), job_pixels(held, tmp_path / "held", index)) <= 1


def test_cpu_offload_without_a_gpu_is_refused_clearly(tiny_zoo, tmp_path):
    from runner.errors import UserError

    with pytest.raises(UserError, match="device.cpu_offload='model'"):
        run(make_config("zoo=tiny", "device=cpu", "device.cpu_offload=model"), tmp_path / "job")


@pytest.mark.parametrize("scheduler", ["dpmpp_2m", "euler_a"])
def test_a_scheduler_kept_from_the_last_job_draws_as_a_fresh_one(scheduler, tiny_zoo, tmp_path):
    """Jobs with the same scheduler settings share one scheduler object (as a hand loop does): the
    stateful multistep and ancestral ones must still draw each job as if built for it alone."""
    small = ("zoo=tiny", "sampling.height=64", "sampling.width=64", f"scheduler={scheduler}", "sampling.steps=3")
    ENGINE.reset()
    run(make_config(*small, "sampling.seed=1"), tmp_path / "first")
    kept = run(make_config(*small, "sampling.seed=2"), tmp_path / "kept")
    loaded = ENGINE.loaded_pipelines()[0]
    assert loaded.scheduler is not None and loaded.pipe.scheduler is loaded.scheduler[1]
    ENGINE.reset()
    fresh = run(make_config(*small, "sampling.seed=2"), tmp_path / "fresh")
    assert np.array_equal(pixels(tmp_path / "kept" / kept["images"][0]["file"]),
                          pixels(tmp_path / "fresh" / fresh["images"][0]["file"]))
