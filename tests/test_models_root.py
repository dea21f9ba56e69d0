"""A models folder as AUTOMATIC1111 or ComfyUI keep one: bare names resolve in it, a missing or
ambiguous name is one error listing the candidates, `lcm-models` lists it; A1111's hashes of the
files are computed once and kept by path, size and modification time."""
import hashlib
import os
import shutil

import pytest

from runner.commands import lcm_models
from runner.config.job_plan import plan_job
from runner.errors import UserError
from runner.outputs import model_hashes
from runner.zoo.single_file import convert_vae
from tests.helpers import make_config

LAYOUT_FOLDERS = {"A1111": ("Stable-diffusion", "Lora", "ControlNet", "VAE"),
                  "ComfyUI": ("checkpoints", "loras", "controlnet", "vae")}


def models_folder(root, layout, zoo):
    """An install's models folder holding the tiny zoo's files as users keep theirs."""
    checkpoints, loras, controlnets, vaes = (root / "models" / name for name in LAYOUT_FOLDERS[layout])
    for folder in (checkpoints / "XL", loras, controlnets, vaes):
        folder.mkdir(parents=True)
    os.link(zoo / "single-file" / "sdxl-base.safetensors", checkpoints / "juggernautXL.safetensors")
    os.link(zoo / "single-file" / "sdxl-base.safetensors", checkpoints / "XL" / "base.safetensors")
    os.link(zoo / "papercut" / "papercut.safetensors", loras / "papercut.safetensors")
    shutil.copytree(zoo / "controlnet-canny-sdxl", controlnets / "canny-small")  # diffusers folders are models too
    return root


@pytest.mark.parametrize("layout", sorted(LAYOUT_FOLDERS))
def test_bare_names_resolve_in_either_layout(layout, tiny_zoo, tmp_path, monkeypatch):
    root = models_folder(tmp_path / "install", layout, tiny_zoo)
    monkeypatch.chdir(tmp_path)
    names = ("zoo=tiny", "experiment=lora_papercut", "model.source=juggernautXL.safetensors",
             "lora.papercut.source=papercut")  # with or without its extension
    plan = plan_job(make_config(*names, f"paths.models={root}"))
    checkpoints, loras = (root / "models" / name for name in LAYOUT_FOLDERS[layout][:2])
    assert plan.base.path == str(checkpoints / "juggernautXL.safetensors")
    assert plan.config.path == str(tiny_zoo / "sdxl-base"), "configs: the model option's repo"
    assert [a.source.file for a in plan.adapters] == [str(tiny_zoo / "lcm-lora-sdxl" / "pytorch_lora_weights.safetensors"),
                                                      str(loras / "papercut.safetensors")]
    monkeypatch.setenv("LCM_RUNNER_MODELS", str(root / "models"))  # the models folder itself works too
    plan = plan_job(make_config("zoo=tiny", "model.source=XL/base.safetensors", "experiment=controlnet_canny",
                                "conditioning.model.source=canny-small"))
    assert plan.base.path == str(checkpoints / "XL" / "base.safetensors")
    assert plan.conditioning.model.path == str(root / "models" / LAYOUT_FOLDERS[layout][2] / "canny-small")


def test_a_missing_or_ambiguous_name_lists_the_candidates(tiny_zoo, tmp_path, monkeypatch):
    root = models_folder(tmp_path / "install", "A1111", tiny_zoo)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as missing:
        plan_job(make_config("zoo=tiny", f"paths.models={root}", "model.source=ponyXL.safetensors"))
    message = str(missing.value)
    assert "model.source='ponyXL.safetensors'" in message and "juggernautXL.safetensors" in message
    assert "XL/base.safetensors" in message and "A1111" in message
    os.link(tiny_zoo / "papercut" / "papercut.safetensors", root / "models" / "Stable-diffusion" / "XL" / "juggernautXL.safetensors")
    with pytest.raises(UserError) as twice:
        plan_job(make_config("zoo=tiny", f"paths.models={root}", "model.source=juggernautXL"))
    assert "ambiguous" in str(twice.value) and "XL/juggernautXL.safetensors" in str(twice.value)
    with pytest.raises(UserError, match="paths.models='.*' is not a models folder"):
        plan_job(make_config("zoo=tiny", f"paths.models={tmp_path}", "model.source=juggernautXL"))


def test_a_single_file_vae_from_the_models_folder(tiny_zoo, tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    root = models_folder(tmp_path / "install", "ComfyUI", tiny_zoo)
    vae = convert_vae(load_file(tiny_zoo / "sdxl-vae-fp16-fix" / "diffusion_pytorch_model.safetensors"))
    save_file(vae, root / "models" / "vae" / "sdxl_vae.safetensors")  # A1111 / ComfyUI VAE files: no prefix
    monkeypatch.chdir(tmp_path)
    plan = plan_job(make_config("zoo=tiny", f"paths.models={root}", "model.vae=sdxl_vae.safetensors"))
    assert plan.vae.path == str(root / "models" / "vae" / "sdxl_vae.safetensors")
    assert plan.config.path == str(tiny_zoo / "sdxl-base"), "a VAE file takes its config from the base"


def test_lcm_models_lists_each_kind_with_sizes(tiny_zoo, tmp_path, capsys, monkeypatch):
    root = models_folder(tmp_path / "install", "ComfyUI", tiny_zoo)
    assert lcm_models.main([str(root)]) == 0
    out = capsys.readouterr().out
    assert "(ComfyUI layout)" in out
    size = lcm_models.human_size((tiny_zoo / "single-file" / "sdxl-base.safetensors").stat().st_size)
    assert f"checkpoint (2, in checkpoints/)" in out and "juggernautXL.safetensors" in out and size in out
    assert "XL/base.safetensors" in out and "lora (1, in loras/)" in out and "controlnet (1, in controlnet/)" in out
    monkeypatch.delenv("LCM_RUNNER_MODELS", raising=False)
    assert lcm_models.main([]) == 2 and "LCM_RUNNER_MODELS" in capsys.readouterr().err


def test_hashes_are_a1111s_and_read_once_per_file_version(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(model_hashes, "_MEMORY", {})
    reads = []
    compute = model_hashes._compute
    monkeypatch.setattr(model_hashes, "_compute", lambda path: reads.append(path) or compute(path))
    header = b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(len(header).to_bytes(8, "little") + header + b"\x00" * 8)
    whole = hashlib.sha256(lora.read_bytes()).hexdigest()
    assert model_hashes.model_hash(str(lora)) == whole[:10]
    assert model_hashes.lora_hash(str(lora)) == hashlib.sha256(b"\x00" * 8).hexdigest()[:12]
    assert len(reads) == 1, "both hashes from one read"
    monkeypatch.setattr(model_hashes, "_MEMORY", {})  # another process: the cache file answers
    assert model_hashes.model_hash(str(lora)) == whole[:10] and len(reads) == 1
    lora.write_bytes(lora.read_bytes()[:-1] + b"\x01")  # changed: size the same, modification time not
    os.utime(lora, ns=(1, 10**18))
    assert model_hashes.model_hash(str(lora)) != whole[:10] and len(reads) == 2
