"""`python -m benchmarks.full_size_cpu`: full-size SDXL + LCM-LoRA on the CPU, the card's code against
lcm-run: the time of the model work (load, LoRA, fuse, a change of the fused stack) and the memory.

The tiny zoo is too small to show what a LoRA fuse costs in time and memory at SDXL's size. This
builds SDXL from its configs with random weights (benchmarks.gpu_bench) and a rank-64 LoRA on the
LCM-LoRA's layers, saves them as a diffusers folder and a LoRA file (about 15 GB of disk in
float32), then runs each way in a fresh process of its own, so that each peak is its own:

  card            the card's code: from_pretrained, LCMScheduler, load_lora_weights, fuse_lora, one call;
  lcm_run         `lcm-run` with the same model and LoRA, fused (the default), one job;
  lcm_run_sweep   `lcm-run -m lora.lcm.weight=1.0,0.5`: a fused stack, then a change of it.

Each reports its phases' seconds (the wall time includes the imports) and its memory from
/proc/self/status (Linux): the peak resident set (VmHWM), and at the end, the model still held, the
anonymous memory (the process's own) and the file-backed pages (mapped weight files, which the
kernel can drop and read again). The images are 128², 1 step by
default: the model work, not the denoising, is measured. Results go to full_size_cpu.json / .md.
Needs about 24 GB of memory at full size; `--tiny` runs the scaled-down architectures (a smoke run).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

WAYS = ("card", "lcm_run", "lcm_run_sweep")
SWEPT_WEIGHTS = (1.0, 0.5)


def build(folder: Path, tiny: bool) -> None:
    """SDXL with random weights as a diffusers folder (`sdxl-base`), and a LoRA file (`lcm-lora`)."""
    from diffusers import StableDiffusionXLPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from benchmarks.gpu_bench import LCM_LORA_TARGETS, sdxl_pipeline

    pipe = sdxl_pipeline(tiny, "cpu")
    pipe.save_pretrained(folder / "sdxl-base")
    # gaussian: B starts at zero, so the LoRA changes no pixel; the fuse's arithmetic is the same
    pipe.unet.add_adapter(LoraConfig(r=64, lora_alpha=64, target_modules=LCM_LORA_TARGETS,
                                     init_lora_weights="gaussian"))
    layers = get_peft_model_state_dict(pipe.unet)
    StableDiffusionXLPipeline.save_lora_weights(folder / "lcm-lora", unet_lora_layers=layers)


def memory() -> Dict[str, Optional[float]]:
    """This process's peak resident set and its anonymous / file-backed memory now, GiB (Linux)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return {"peak_gib": None, "anonymous_gib": None, "file_backed_gib": None}

    def gib(key: str) -> float:
        return round(int(re.search(rf"{key}:\s+(\d+)", status).group(1)) / 2**20, 2)

    return {"peak_gib": gib("VmHWM"), "anonymous_gib": gib("RssAnon"), "file_backed_gib": gib("RssFile")}


def measure(way: str, folder: Path, size: int, steps: int) -> Dict[str, Any]:
    """One way, in this process: seconds per phase, then memory."""
    started = time.perf_counter()
    phases, held = _card(folder, size, steps) if way == "card" else _lcm_run(way, folder, size, steps)
    return {"way": way, "seconds": {**phases, "wall": round(time.perf_counter() - started, 2)}, **held}


def _card(folder: Path, size: int, steps: int) -> Tuple[Dict[str, float], Dict[str, Optional[float]]]:
    import torch
    from diffusers import DiffusionPipeline, LCMScheduler

    phases, t = {}, time.perf_counter()

    def done(phase: str) -> None:
        nonlocal t
        phases[phase] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()

    pipe = DiffusionPipeline.from_pretrained(str(folder / "sdxl-base"), dtype=torch.float32)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    done("load")
    pipe.load_lora_weights(str(folder / "lcm-lora"))
    done("lora")
    pipe.fuse_lora()
    done("fuse")
    pipe.set_progress_bar_config(disable=True)
    pipe("a photo of a cat", num_inference_steps=steps, guidance_scale=0.0, height=size, width=size)
    done("generate")
    return phases, memory()  # while the pipeline is held, as lcm-run's cache holds its own


def _lcm_run(way: str, folder: Path, size: int, steps: int) -> Tuple[Dict[str, float], Dict[str, Optional[float]]]:
    from runner.commands import lcm_run
    from runner.outputs import records
    from benchmarks.bench import run_hydra

    out = folder / "runs" / way
    arguments = [f"model.source={folder / 'sdxl-base'}", "model.variant=null", f"lora.lcm.source={folder / 'lcm-lora'}",
                 "device=cpu", f"sampling.steps={steps}", f"sampling.height={size}", f"sampling.width={size}"]
    if way == "lcm_run_sweep":
        run_hydra(lcm_run.run_app, [*arguments, f"lora.lcm.weight={','.join(map(str, SWEPT_WEIGHTS))}",
                                f"hydra.sweep.dir={out}"])
    else:
        run_hydra(lcm_run.run_app, [*arguments, f"hydra.run.dir={out}"], multirun=False)
    phases = {}
    jobs = [records.read_json(path) for path in out.glob(f"**/{records.RUN_JSON}")]
    for record in sorted(jobs, key=lambda record: record["cache"]["base"] != "miss"):  # the loading job first
        loads = record["cache"]["base"] == "miss"
        prefix = "" if way == "lcm_run" else ("first job " if loads else "stack change ")
        shown = ("load", "prepare", "generate") if loads else ("prepare", "generate")
        phases.update({f"{prefix}{phase}": round(record["timings"][phase], 2) for phase in shown})
    return phases, memory()


def run(tiny: bool, size: int, steps: int, work: Path) -> Dict[str, Any]:
    build(work, tiny)
    rows: List[Dict[str, Any]] = []
    for way in WAYS:
        command = [sys.executable, "-m", "benchmarks.full_size_cpu", "--measure", way, "--model-folder", str(work),
                   "--size", str(size), "--steps", str(steps)]
        finished = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if finished.returncode != 0:
            rows.append({"way": way, "error": (finished.stderr.strip().splitlines() or ["?"])[-1][:300]})
        else:
            rows.append(json.loads(finished.stdout.strip().splitlines()[-1]))
    return {"tiny": tiny, "size": size, "steps": steps, "rows": rows}


def to_markdown(result: Dict[str, Any]) -> str:
    title = (f"SDXL{' (tiny architectures)' if result['tiny'] else ''} + a rank-64 LoRA on the LCM-LoRA's layers, "
             f"float32 on the CPU, {result['size']}², {result['steps']} step(s), each way in its own process")
    lines = [f"### {title}", "", "| way | seconds | peak GiB | anonymous GiB at the end | file-backed GiB at the end |",
             "|---|---|---:|---:|---:|"]
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"| {row['way']} | failed: {row['error'].replace('|', '/')} | | | |")
            continue
        seconds = ", ".join(f"{phase} {value}" for phase, value in row["seconds"].items())
        lines.append(f"| {row['way']} | {seconds} | {row['peak_gib']} | {row['anonymous_gib']} | "
                     f"{row['file_backed_gib']} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.full_size_cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="scaled-down architectures (a smoke run)")
    parser.add_argument("--size", type=int, default=128, help="image height and width (default 128)")
    parser.add_argument("--steps", type=int, default=1, help="denoising steps (default 1)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for the results")
    parser.add_argument("--work", type=Path, default=None,
                        help="where the model is written (about 15 GB; default: a temporary folder in --out)")
    parser.add_argument("--measure", choices=WAYS, help=argparse.SUPPRESS)  # one way, in this process
    parser.add_argument("--model-folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.model_folder, args.size, args.steps)))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".full-size-cpu-", dir=args.work or args.out) as work:
        result = run(args.tiny, args.size, args.steps, Path(work))
    (args.out / "full_size_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    table = to_markdown(result)
    (args.out / "full_size_cpu.md").write_text(table)
    print(table)
    return 0 if all("error" not in row for row in result["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
