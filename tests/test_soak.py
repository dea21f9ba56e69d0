"""A long sweep in one process does not grow: a few hundred jobs that switch LoRA files (swapped in
place and loaded fresh), weights, fused and live stacks and conditioning kinds, over and over. After
a warm-up, resident memory stays within a few percent, and the live adapters, LoRA layers, tensors
and cached entries are the same at the same point of every round. The figure: docs/performance.md."""
import gc
import time

import psutil
import pytest
import torch
from peft.tuners.lora import LoraLayer

from runner.engine.state import ENGINE
from runner.run import run
from tests.helpers import make_config
from tests.test_lora_hotswap import another_style

ROUNDS = 25  # x 8 jobs
WARM_UP = 3  # rounds before the baseline: allocator pools, lazily built pipeline variants, caches filled
BASE = ("zoo=tiny", "device=cpu", "sampling.steps=1", "sampling.height=64", "sampling.width=64")
LIVE = (*BASE, "lora=lcm_papercut", "fuse_lora=false")


def round_of_jobs(zoo, folder):
    """One round: each kind of switch a sweep makes, in an order that makes every one of them happen."""
    style = another_style(zoo, folder / "style", 2.0)
    lcm_file = (f"lora.papercut.source={zoo / 'lcm-lora-sdxl'}", "lora.papercut.weight_name=pytorch_lora_weights.safetensors")
    return {
        "live stack": (*LIVE, "lora.papercut.weight=0.5"),
        "weight only": (*LIVE, "lora.papercut.weight=0.9", "sampling.seed=1"),
        "file swapped in place": (*LIVE, *style, "lora.papercut.weight=0.7"),
        "fused stack": (*LIVE, "fuse_lora=true", "lora.papercut.weight=0.8"),
        "file loaded fresh": (*LIVE, *lcm_file, "lora.papercut.weight=0.6"),
        "ControlNet": (*LIVE, "conditioning=controlnet_canny", "lora.papercut.weight=0.5"),
        "T2I-Adapter, fused": (*LIVE, "conditioning=t2i_adapter_canny", "fuse_lora=true"),
        "LCM-LoRA alone, fused": (*BASE, "lora=lcm"),
    }


def footprint():
    """What the process holds: resident bytes, and counts that a leak would make grow."""
    gc.collect()
    (loaded,) = ENGINE.loaded_pipelines()
    components = [getattr(loaded.pipe, name) for name in ("unet", "text_encoder", "text_encoder_2")]
    return {
        "rss": psutil.Process().memory_info().rss,
        "tensors": sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor)),
        "adapters": sum(len(getattr(c, "peft_config", None) or {}) for c in components),
        "lora layers": sum(len(m.lora_A) for c in components for m in c.modules() if isinstance(m, LoraLayer))
        + sum(len(layer.lora_A) for _, _, layer in loaded.bypassed),  # those taken out while fused
        "pipeline variants": len(loaded.variants),
        "prompt embeddings": len(loaded.prompt_embeddings),
        "kept originals": len(loaded.pristine),
        "bypassed layers": len(loaded.bypassed),
        "components": len(ENGINE.components.entries()),
        "prepared inputs": len(ENGINE.prepared_inputs) + len(ENGINE.encoded_inputs),
    }


@pytest.mark.slow
def test_a_long_sweep_in_one_process_keeps_its_memory_flat(tiny_zoo, tmp_path, fresh_cache):
    configs = {name: make_config(*overrides) for name, overrides in round_of_jobs(tiny_zoo, tmp_path).items()}
    jobs, rss, started = 0, [], time.perf_counter()
    for number in range(ROUNDS):
        for name, cfg in configs.items():
            record = run(cfg, tmp_path / "jobs" / str(jobs))
            assert record["status"] == "ok", (name, record["error"])
            jobs += 1
        if number == 0:  # every kind of switch happened as intended
            assert record["fused"] and [a["name"] for a in record["adapters"]] == ["lcm"]
        now = footprint()
        rss.append(now["rss"])
        if number == WARM_UP - 1:
            baseline = now
    seconds = time.perf_counter() - started
    growth = rss[-1] / baseline["rss"] - 1
    counts = {key: value for key, value in now.items() if key not in ("rss",)}
    print(f"\n{jobs} jobs in {seconds:.0f} s; RSS after warm-up {baseline['rss'] / 2**20:.0f} MiB, at the end "
          f"{rss[-1] / 2**20:.0f} MiB ({growth:+.2%}), peak {max(rss) / 2**20:.0f} MiB; {counts}; "
          f"MiB per round: {[round(value / 2**20, 1) for value in rss]}")
    assert {key: baseline[key] for key in counts} == counts, "something is kept from round to round"
    assert growth < 0.03, [f"{value / 2**20:.0f}" for value in rss]
