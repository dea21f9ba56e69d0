"""Single-file checkpoints (the original SDXL key layout, as A1111 and ComfyUI keep them) load with
diffusers' from_single_file and the configs of `model.config`, pixel for pixel as the diffusers
folder they were converted from; a sweep over checkpoints loads each once; the PNGs carry A1111's
hashes of the files."""
import hashlib
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from runner.config.job_plan import plan_job
from runner.errors import UserError
from runner.outputs.png_metadata import read_png_metadata
from runner.run import run
from tests.helpers import lcm_run, make_config

SMALL = ("zoo=tiny", "device=cpu", "sampling.height=64", "sampling.width=64", "sampling.steps=2")


def pixels(record, job):
    return np.asarray(Image.open(job / record["images"][0]["file"]).convert("RGB"))


def sha256(path, skip_header=False):
    data = path.read_bytes()
    if skip_header:  # A1111's AddNet hash: what follows the 8-byte length and the JSON header
        data = data[8 + int.from_bytes(data[:8], "little"):]
    return hashlib.sha256(data).hexdigest()


def test_the_zoo_single_file_twin_is_an_sdxl_checkpoint_in_the_original_layout(tiny_zoo):
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    from safetensors.torch import load_file

    checkpoint = load_file(tiny_zoo / "single-file" / "sdxl-base.safetensors")
    assert infer_diffusers_model_type(checkpoint) == "xl_base", "diffusers must recognise it as SDXL"
    prefixes = {key.split(".")[0] for key in checkpoint}
    assert prefixes == {"model", "first_stage_model", "conditioner"}
    assert "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight" in checkpoint


def test_every_zoo_weight_is_exact_in_float16(tiny_zoo):
    """So that the fp16 variant files of the hub-cache layout hold the same values."""
    import torch
    from safetensors.torch import load_file

    for path in tiny_zoo.rglob("*.safetensors"):
        for name, tensor in load_file(path).items():
            if tensor.is_floating_point():
                assert torch.equal(tensor.half().to(tensor.dtype), tensor), (path.name, name)


def test_a_single_file_checkpoint_equals_its_diffusers_folder(tiny_zoo, tmp_path, monkeypatch, fresh_cache):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the hash cache
    checkpoint = tiny_zoo / "single-file" / "sdxl-base.safetensors"
    single = (f"model.source={checkpoint}", f"model.config={tiny_zoo / 'sdxl-base'}")
    for weight in (1.0, 0.5):  # a fused stack changed: the single file's weights are read back whole
        folder_record = run(make_config(*SMALL, f"lora.lcm.weight={weight}"), tmp_path / f"folder{weight}")
        file_record = run(make_config(*SMALL, *single, f"lora.lcm.weight={weight}"), tmp_path / f"file{weight}")
        assert file_record["components"]["base"] == str(checkpoint) and file_record["pipeline"] == "StableDiffusionXLPipeline"
        assert np.array_equal(pixels(file_record, tmp_path / f"file{weight}"),
                              pixels(folder_record, tmp_path / f"folder{weight}")), weight
    parameters = read_png_metadata(tmp_path / "file0.5" / file_record["images"][0]["file"])["parameters"]
    assert parameters["Model hash"] == sha256(checkpoint)[:10] and parameters["Model"] == "sdxl-base.safetensors"
    lcm_file = tiny_zoo / "lcm-lora-sdxl" / "pytorch_lora_weights.safetensors"
    assert parameters["Lora hashes"] == f"lcm: {sha256(lcm_file, skip_header=True)[:12]}"
    assert file_record["hashes"] == {"model": sha256(checkpoint)[:10], "lora": {"lcm": sha256(lcm_file, True)[:12]}}
    folder_parameters = read_png_metadata(tmp_path / "folder0.5" / folder_record["images"][0]["file"])["parameters"]
    assert "Model hash" not in folder_parameters, "A1111 hashes files; a diffusers folder has no such hash"


def test_model_config_defaults_to_the_model_options_repo(tiny_zoo):
    plan = plan_job(make_config("zoo=tiny", f"model.source={tiny_zoo / 'single-file' / 'sdxl-base.safetensors'}"))
    assert plan.config.path == str(tiny_zoo / "sdxl-base") and plan.variant is None


@pytest.mark.parametrize("overrides, expected", [
    (["model.source={zoo}/papercut/papercut.safetensors"], ["model.source", "papercut.safetensors", "LoRA weights"]),
    (["model.source={zoo}/single-file/sdxl-base.safetensors", "model.config=null"], ["single file", "model.config="]),
])
def test_what_is_not_a_usable_checkpoint_is_refused_before_loading(tiny_zoo, overrides, expected):
    with pytest.raises(UserError) as error:
        plan_job(make_config("zoo=tiny", *(o.format(zoo=tiny_zoo) for o in overrides)))
    assert all(part in str(error.value) for part in expected), str(error.value)


@pytest.mark.slow
def test_a_checkpoint_sweep_loads_each_file_once(tiny_zoo, tmp_path):
    """The grid alternates the checkpoints; lcm-run's cost order groups them, so each loads once."""
    first = tmp_path / "a.safetensors"
    second = tmp_path / "b.safetensors"
    shutil.copy(tiny_zoo / "single-file" / "sdxl-base.safetensors", first)
    shutil.copy(first, second)
    arguments = ("-m", *SMALL[:4], "sampling.steps=1,2", f"model.source={first},{second}",
                 f"model.config={tiny_zoo / 'sdxl-base'}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    planned = lcm_run(*arguments, "plan=true", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert f"base {first} ({first}): loaded 1x" in planned.stdout and f"base {second} ({second}): loaded 1x" in planned.stdout
    done = lcm_run(*arguments, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads((tmp_path / "sweep" / str(n) / "run.json").read_text()) for n in range(4)]
    assert [r["components"]["base"] for r in records] == [str(first), str(second)] * 2, "the grid's numbering"
    assert sorted(r["cache"]["base"] for r in records) == ["hit", "hit", "miss", "miss"]
    # the order the jobs ran in: each run.json is written as its job ends
    order = sorted(range(4), key=lambda n: (tmp_path / "sweep" / str(n) / "run.json").stat().st_mtime_ns)
    assert order == [0, 2, 1, 3], order  # first's jobs, then second's
    assert np.array_equal(pixels(records[0], tmp_path / "sweep" / "0"), pixels(records[1], tmp_path / "sweep" / "1"))
