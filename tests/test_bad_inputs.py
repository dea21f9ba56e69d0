"""A catalogue of bad inputs, each tried as a user would (the lcm-run command): the message names
the problem, the exit is non-zero, there is no traceback, and nothing is written."""
import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.helpers import lcm_run


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-files")
    (root / "style.bin").write_bytes(b"\x80\x04pickle that would run code")
    (root / "garbage.safetensors").write_bytes(b"\x00" * 64)
    w = np.zeros((4, 4), dtype=np.float32)
    save_file({"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": w,
               "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": w},
              str(root / "sd15_lora.safetensors"))
    save_file({"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": w},
              str(root / "flux_lora.safetensors"))
    save_file({"conv_in.weight": w}, str(root / "not_a_lora.safetensors"))
    (root / "notes.png").write_text("this is text, not an image")
    (root / "empty-model").mkdir()
    pickled = root / "pickled-model"
    (pickled / "unet").mkdir(parents=True)
    (pickled / "model_index.json").write_text("{}")
    (pickled / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04")
    (root / "a-file").write_text("not a folder")
    return root


CATALOGUE = [
    # (id, lcm-run arguments, fragments the message must contain)
    ("steps zero", ["sampling.steps=0"], ["sampling.steps=0", "at least 1"]),
    ("steps negative", ["sampling.steps=-3"], ["sampling.steps=-3"]),
    ("steps huge", ["sampling.steps=100000"], ["sampling.steps=100000", "more than 1000"]),
    ("steps not a number", ["sampling.steps=four"], ["sampling.steps", "four"]),
    ("guidance negative", ["sampling.guidance_scale=-1"], ["sampling.guidance_scale=-1"]),
    ("guidance not a number", ["sampling.guidance_scale=high"], ["guidance_scale", "high"]),
    ("height not multiple of 8", ["sampling.height=100"], ["sampling.height=100", "multiple of 8", "96 or 104"]),
    ("width zero", ["sampling.width=0"], ["sampling.width=0"]),
    ("size huge", ["sampling.width=100000"], ["sampling.width=100000"]),
    ("no images", ["sampling.num_images=0"], ["sampling.num_images=0"]),
    ("negative seed", ["sampling.seed=-1"], ["sampling.seed=-1"]),
    ("empty prompt", ["sampling.prompt=''"], ["sampling.prompt is empty"]),
    ("unknown key", ["sampling.stepz=4"], ["sampling.stepz"]),
    ("unknown top-level key", ["+colour=red"], ["colour", "not a setting"]),
    ("unknown key added with +", ["+sampling.cfg=7"], ["sampling.cfg", "not a setting"]),
    ("unknown scheduler", ["scheduler=nope"], ["scheduler/nope", "dpmpp_2m"]),
    ("unknown model option", ["model=sdxl_turbo"], ["model/sdxl_turbo"]),
    ("group choice that is a number", ["scheduler=0"], ["scheduler=0", "choose one of", "lcm"]),
    ("guidance not finite", ["sampling.guidance_scale=nan"], ["sampling.guidance_scale=nan", "not a finite number"]),
    ("unknown experiment", ["experiment=nope"], ["experiment/nope"]),
    ("hostile scheduler target", ["scheduler._target_=os.system"], ["scheduler._target_='os.system'"]),
    ("scheduler not partial", ["scheduler._partial_=false"], ["scheduler._partial_"]),
    ("unknown device", ["device.type=tpu"], ["device.type='tpu'"]),
    ("unknown dtype", ["device.dtype=float8"], ["device.dtype='float8'"]),
    ("bad on_invalid", ["on_invalid=maybe"], ["on_invalid='maybe'"]),
    ("missing model folder", ["model.source=/no/such/model"], ["model.source='/no/such/model'", "does not exist"]),
    ("model folder without model_index", ["model.source={files}/empty-model"], ["no model_index.json"]),
    ("model with pickle weights", ["model.source={files}/pickled-model"], ["pickle", "allow_pickle=true"]),
    ("uncached hub model", ["model.source=someone/uncached-model"], ["someone/uncached-model", "tiny zoo"]),
    ("missing LoRA file", ["lora.lcm.source=/no/such/lora.safetensors"], ["lora.lcm.source", "does not exist"]),
    ("LoRA weight not a number", ["lora.lcm.weight=strong"], ["lora.lcm.weight", "strong"]),
    ("pickle LoRA", ["lora.lcm.source={files}/style.bin"], ["lora.lcm.source", "pickle", "allow_pickle=true"]),
    ("corrupt LoRA", ["lora.lcm.source={files}/garbage.safetensors"], ["not a readable safetensors file"]),
    ("SD 1.5 LoRA", ["lora.lcm.source={files}/sd15_lora.safetensors"], ["Stable Diffusion 1.x/2.x", "not for SDXL"]),
    ("Flux LoRA", ["lora.lcm.source={files}/flux_lora.safetensors"], ["transformer model", "not for SDXL"]),
    ("not a LoRA", ["lora.lcm.source={files}/not_a_lora.safetensors"], ["holds no LoRA weights"]),
    ("SDXL LCM-LoRA on an SD 1.5 base", ["model=sd15"],
     ["lora.lcm.source", "is a LoRA for SDXL, not for Stable Diffusion 1.5", "lora=lcm_sd15"]),
    ("conditioning the family lacks", ["model=sd15", "lora=lcm_sd15", "conditioning=t2i_adapter_canny"],
     ["conditioning=t2i_adapter_canny does not exist for Stable Diffusion 1.5", "controlnet_canny"]),
    ("missing input image", ["experiment=controlnet_canny", "conditioning.image=/no/such.png"],
     ["conditioning.image='/no/such.png'", "does not exist"]),
    ("missing mask", ["experiment=inpaint", "conditioning.mask_image=/no/mask.png"], ["conditioning.mask_image"]),
    ("image that is not an image", ["experiment=controlnet_canny", "conditioning.image={files}/notes.png"],
     ["not a readable image"]),
    ("image URL offline", ["experiment=t2i_adapter_canny", "conditioning.image=https://example.org/x.png"],
     ["https://example.org/x.png", "HF_HUB_OFFLINE"]),
    ("strength zero", ["experiment=inpaint", "conditioning.strength=0"], ["conditioning.strength=0"]),
    ("negative conditioning scale", ["experiment=controlnet_canny", "conditioning.conditioning_scale=-1"],
     ["conditioning.conditioning_scale=-1"]),
    ("guidance window reversed", ["experiment=controlnet_canny", "conditioning.control_guidance_start=0.8",
                                  "conditioning.control_guidance_end=0.2"], ["control_guidance_start=0.8"]),
    ("canny thresholds reversed", ["experiment=controlnet_canny", "conditioning.low_threshold=250",
                                   "conditioning.high_threshold=10"], ["low_threshold=250"]),
    ("key of another conditioning kind", ["experiment=inpaint", "+conditioning.detect_resolution=384"],
     ["conditioning.detect_resolution", "inpaint"]),
    ("unwritable output folder", ["paths.root={files}/a-file/outputs"], ["cannot write", "a-file"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("arguments,fragments", [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE])
def test_bad_input_is_named_and_nothing_is_written(arguments, fragments, bad_files, tmp_path):
    arguments = [a.format(files=bad_files) for a in arguments]
    done = lcm_run("zoo=tiny", *arguments, cwd=tmp_path)
    message = done.stderr
    assert done.returncode == 2, "bad input"
    assert "Traceback" not in message
    assert len([line for line in message.splitlines() if line.strip()]) == 1, "one paragraph, not a dump"
    for fragment in fragments:
        assert fragment.format(files=bad_files) in message, message
    assert not list(tmp_path.iterdir()), "nothing may be written"


def test_the_catalogue_is_at_least_thirty_strong():
    assert len(CATALOGUE) >= 30


@pytest.mark.slow
def test_a_sweep_with_bad_jobs_lists_them_all_and_runs_none(tmp_path):
    done = lcm_run("-m", "zoo=tiny", "sampling.steps=0,4", "sampling.height=64,60", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "3 of 4 jobs are invalid, so none ran" in done.stderr
    assert "on_invalid=skip" in done.stderr
    assert not list(tmp_path.iterdir())
