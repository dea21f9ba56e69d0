"""How fast a sweep's images reach the disk at a GPU's image size, for `python -m benchmarks.bench`.

A GPU makes a 4-step 1024² SDXL image in a few tenths of a second; encoding it as a PNG takes one
CPU core about as long. The same images are written three ways, in this process:

  by hand        `image.save(path)` in the loop, as the floor does (the loop waits for it);
  writer (1)     lcm-run's job writer (runner.run._finish: PNG with metadata, the contact sheet's
                 thumbnail, then run.json) on the background writer with one thread;
  writer (auto)  the same with the thread count a GPU sweep gets on this machine (writers.threads_for).

Nothing else runs meanwhile, so each time is the rate at which that way can take images; in a
sweep, the writer's runs beside the denoising. The images are bicubic-upscaled noise, which
compresses like a smooth render (1.4 MB a 1024² PNG).
"""
from __future__ import annotations

import copy
import functools
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List

import numpy as np
from PIL import Image

from runner import run
from runner.outputs import writers


def synthetic_images(count: int, size: int) -> List[Image.Image]:
    rng = np.random.default_rng(0)
    small = max(1, size // 16)
    return [Image.fromarray((rng.random((small, small, 3)) * 255).astype(np.uint8)).resize((size, size),
                                                                                         Image.BICUBIC)
            for _ in range(count)]


def measure_writes(record: Dict[str, Any], count: int, size: int, repeats: int, folder: Path) -> Dict[str, Any]:
    """Images per second written each way (fastest of `repeats`, the ways taking turns). `record` is
    a run.json record of a real job: its metadata goes into every PNG, as in a sweep."""
    images = synthetic_images(count, size)
    auto = writers.threads_for("cuda")
    ways: Dict[str, Callable[[Path], None]] = {
        "by_hand": lambda out: _by_hand(images, out),
        "writer_1_thread": lambda out: _with_writer(images, record, 1, out),
        "writer_auto": lambda out: _with_writer(images, record, auto, out),
    }
    best = {name: float("inf") for name in ways}
    for attempt in range(repeats):
        for name, write in ways.items():
            out = folder / f"{name}-{attempt}"
            out.mkdir(parents=True)
            started = time.perf_counter()
            write(out)
            best[name] = min(best[name], time.perf_counter() - started)
    seconds = {name: round(value, 4) for name, value in best.items()}
    rates = {name: round(count / value, 2) for name, value in seconds.items()}  # from the times shown
    return {"images": count, "size": size, "auto_threads": auto, "seconds": seconds,
            "images_per_s": rates, "writer_auto/by_hand": round(rates["writer_auto"] / rates["by_hand"], 2)}


def _by_hand(images: List[Image.Image], out: Path) -> None:
    for index, image in enumerate(images):
        image.save(out / f"{index}.png")


def _with_writer(images: List[Image.Image], record: Dict[str, Any], threads: int, out: Path) -> None:
    writer = writers.BackgroundWriter(threads)
    for index, image in enumerate(images):  # one job per image, each in its own folder, as in a sweep
        job_dir = out / str(index)
        job_dir.mkdir()
        plan = SimpleNamespace(seeds=(index,), prompt_row=None)  # all that _finish reads of a job's plan
        writer.submit(functools.partial(run._finish, job_dir, copy.deepcopy(record), plan, ([image], {}, [{}]),
                                        time.perf_counter(), keep_thumbnails=True))
    writer.close()


def markdown_lines(result: Dict[str, Any]) -> List[str]:
    rate, seconds = result["images_per_s"], result["seconds"]
    return [f"Writing {result['images']} images of {result['size']}² as PNG files, nothing else running "
            "(images a second; fastest run):", "",
            f"- by hand, `image.save` in the loop: {rate['by_hand']:.2f} ({seconds['by_hand']:.2f} s)",
            f"- lcm-run's writer, 1 thread: {rate['writer_1_thread']:.2f} "
            f"({seconds['writer_1_thread']:.2f} s; PNG metadata, thumbnail and run.json included)",
            f"- lcm-run's writer, {result['auto_threads']} threads (a GPU sweep on this machine): "
            f"{rate['writer_auto']:.2f} ({seconds['writer_auto']:.2f} s): "
            f"**{result['writer_auto/by_hand']:.2f}x** the hand loop's rate"]
