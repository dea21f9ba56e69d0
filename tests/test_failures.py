"""Failures at run time: NaN/black output is decoded again in float32 or fails the job clearly,
and Ctrl-C / SIGTERM stop a sweep cleanly so that a rerun completes it."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from PIL import Image

from tests.helpers import lcm_run, make_config
from runner.run import run

SMALL = ("zoo=tiny", "sampling.height=64", "sampling.width=64")


def test_a_nan_decode_is_retried_in_float32_and_recorded(tiny_zoo, tmp_path, monkeypatch):
    clean = run(make_config(*SMALL), tmp_path / "clean")
    assert clean["guards"] == {"decode_retried_fp32": False}
    original, calls = AutoencoderKL.decode, []

    def overflowing_once(self, z, *args, **kwargs):
        calls.append(z.dtype)
        out = original(self, z, *args, **kwargs)
        return (out[0] * float("nan"),) + tuple(out[1:]) if len(calls) == 1 else out

    monkeypatch.setattr(AutoencoderKL, "decode", overflowing_once)
    record = run(make_config(*SMALL), tmp_path / "nan")
    assert len(calls) == 2 and calls[1] == torch.float32
    assert record["status"] == "ok" and record["guards"] == {"decode_retried_fp32": True}
    saved = np.asarray(Image.open(tmp_path / "nan" / record["images"][0]["file"]))
    assert saved.max() > 0
    assert np.array_equal(saved, np.asarray(Image.open(tmp_path / "clean" / clean["images"][0]["file"])))


def test_non_finite_latents_fail_the_job_with_a_clear_error(tiny_zoo, tmp_path, monkeypatch):
    from runner.engine.decoding import GenerationFailed

    original = UNet2DConditionModel.forward

    def overflowing(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        return (out[0] * float("inf"),) + tuple(out[1:])

    monkeypatch.setattr(UNet2DConditionModel, "forward", overflowing)
    with pytest.raises(GenerationFailed, match="not finite"):
        run(make_config(*SMALL), tmp_path / "job")
    record = json.loads((tmp_path / "job" / "run.json").read_text())
    assert record["status"] == "failed" and "GenerationFailed" in record["error"]
    assert not list((tmp_path / "job").glob("*.png"))


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_sweep_stops_cleanly_and_a_rerun_completes_it(stop, tiny_zoo, tmp_path):
    sweep = tmp_path / "sweep"
    # one call per job, the first one short and the later ones long, so that the signal lands mid-sweep
    # (with batched seeds and 2 steps at most, the sweep could finish before the signal arrived)
    args = ["-m", *SMALL, "sampling.steps=1,20", "sampling.seed=0,1,2,3", "hydra.sweeper.batch_size=1",
            f"hydra.sweep.dir={sweep}"]
    process = subprocess.Popen([sys.executable, "-c", "from runner.commands.lcm_run import entry; entry()", *args],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 300
    while not list(sweep.glob("*/run.json")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(stop)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Run the same command again to resume" in err and "Traceback" not in err
    assert not list(sweep.rglob("*.tmp")), "an interrupted write must not leave partial files"
    recorded = [json.loads(p.read_text()) for p in sweep.glob("*/run.json")]
    assert all(r["status"] in ("ok", "failed") for r in recorded) and len(recorded) < 8

    done = lcm_run(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    statuses = [json.loads(p.read_text())["status"] for p in sweep.glob("*/run.json")]
    assert len(statuses) == 8 and set(statuses) <= {"ok", "skipped"}


def test_a_signal_during_a_shared_config_change_is_raised_once_the_change_is_whole():
    from runner.sweep import interrupts

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    interrupts.install()
    try:
        done = []
        with pytest.raises(interrupts.Interrupted):
            with interrupts.held():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler runs here, in the block: it must not raise yet
                done.append("whole")
        assert done == ["whole"]
        with pytest.raises(KeyboardInterrupt):  # outside a held block, at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
