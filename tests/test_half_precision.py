"""Half precision on the CPU: every card workflow runs in float16 and in bfloat16 without NaN or black
images, the dtype recorded in run.json; a VAE that overflows in float16 is caught by the guard and
decoded again in float32."""
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image

from runner.engine.state import ENGINE
from runner.run import run
from tests.helpers import make_config

WORKFLOWS = ("t2i", "inpaint", "lora_papercut", "controlnet_canny", "t2i_adapter_canny")
SMALL = ("zoo=tiny", "device=cpu", "sampling.height=64", "sampling.width=64", "sampling.steps=2")  # inpainting at strength 0.9999 needs 2


def saved(job, record):
    return np.asarray(Image.open(job / record["images"][0]["file"]).convert("RGB"), dtype=np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_every_workflow_runs_in_half_precision(dtype, tiny_zoo, tmp_path, fresh_cache):
    for workflow in WORKFLOWS:
        job = tmp_path / workflow
        record = run(make_config(f"experiment={workflow}", *SMALL, f"device.dtype={dtype}"), job)
        assert record["status"] == "ok" and record["device"] == {"type": "cpu", "dtype": dtype}, workflow
        assert "decode_retried_fp32" in record["guards"], workflow
        image = saved(job, record)
        assert image.max() > 0 and image.std() > 1, f"{workflow}: a black or flat image"
        ENGINE.reset()  # one half-precision pipeline at a time


@pytest.mark.slow
def test_a_float16_overflow_in_the_vae_is_decoded_again_in_float32(tiny_zoo, tmp_path, fresh_cache):
    """A VAE configured to decode in float16 (force_upcast false, as the fp16-fix VAE) whose first
    decoder layer overflows float16's range: NaN in float16, fine in float32."""
    vae = AutoencoderKL.from_pretrained(tiny_zoo / "sdxl-vae-fp16-fix")
    with torch.no_grad():
        for parameter in (vae.decoder.conv_in.weight, vae.decoder.conv_in.bias):
            parameter.mul_(2.0 ** 16)
    vae.save_pretrained(tmp_path / "overflowing-vae")
    record = run(make_config(*SMALL, "device.dtype=float16", f"model.vae={tmp_path / 'overflowing-vae'}"), tmp_path / "job")
    assert record["device"]["dtype"] == "float16" and record["guards"] == {"decode_retried_fp32": True}
    image = saved(tmp_path / "job", record)
    assert np.isfinite(image).all() and image.max() > 0 and image.std() > 1
