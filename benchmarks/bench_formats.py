"""`python -m benchmarks.bench_formats`: what `outputs.format` and `outputs.keep` save on disk.

1. The same tiny-zoo sweep (experiment=t2i, seeds 0-7, 1 step: 8 jobs at 256², CPU), run in this
   process once per setting: the bytes of its images (every job folder's image files) and of the
   whole sweep folder (run.json, Hydra's files, the contact sheet, summary.csv and index.html too).
   At 256² a thumbnail is the image itself: what outputs.keep=thumbnails saves shows in part 2.
2. One 1024² image encoded by lcm-run's own writer code (runner.outputs.image_files.encode, metadata
   included) in each format, and its thumbnail as outputs.keep=thumbnails keeps it: bytes and encoding
   time (best of 3). Two images: a tiny-zoo render at
   1024² (random weights: structured noise, the hardest case for every codec) and
   benchmarks.bench_writer's bicubic-upscaled noise (smooth, its PNG about the size of an SDXL
   render's).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from PIL import Image

from benchmarks.bench import run_hydra
from benchmarks.bench_writer import synthetic_images
from runner.commands import lcm_run
from runner.outputs import image_files, records, thumbnails

SWEEP = ["experiment=t2i", "zoo=tiny", "device=cpu", "sampling.seed=range(0,8)", "sampling.steps=1"]
SETTINGS = {
    "png (default)": [],
    "webp, quality 90": ["outputs.format=webp"],
    "webp, lossless": ["outputs.format=webp", "outputs.lossless=true"],
    "jpeg, quality 90": ["outputs.format=jpeg"],
    "jpeg, keep=thumbnails": ["outputs.format=jpeg", "outputs.keep=thumbnails"],
}
FORMATS = {"png": image_files.ImageFormat(), "webp q90": image_files.ImageFormat("webp"),
           "webp lossless": image_files.ImageFormat("webp", lossless=True), "jpeg q90": image_files.ImageFormat("jpeg")}
THUMBNAILS = {"webp q90 thumbnail": image_files.ImageFormat("webp", keep="thumbnails"),
              "jpeg q90 thumbnail": image_files.ImageFormat("jpeg", keep="thumbnails")}


def sweep_sizes(folder: Path) -> Dict[str, Dict[str, int]]:
    sizes = {}
    for number, (name, extra) in enumerate(SETTINGS.items()):
        sweep = folder / f"sweep-{number}"
        run_hydra(lcm_run.run_app, [*SWEEP, *extra, f"hydra.sweep.dir={sweep}"])
        files = [p for p in sweep.rglob("*") if p.is_file()]
        images = [p for p in files if image_files.is_image_file(p.name) and p.parent != sweep]
        sizes[name] = {"images": len(images), "image_bytes": sum(p.stat().st_size for p in images),
                       "folder_bytes": sum(p.stat().st_size for p in files)}
    return sizes


def encode_sizes(folder: Path, repeats: int) -> Dict[str, Dict[str, Any]]:
    job = folder / "render-1024"
    run_hydra(lcm_run.run_app, ["experiment=t2i", "zoo=tiny", "device=cpu", "sampling.steps=1",
                                "sampling.height=1024", "sampling.width=1024", f"hydra.run.dir={job}"], multirun=False)
    record = records.read_json(job / records.RUN_JSON)
    with Image.open(job / record["images"][0]["file"]) as render:
        render.load()
    images = {"tiny-zoo render": render, "upscaled noise": synthetic_images(1, 1024)[0]}
    found: Dict[str, Dict[str, Any]] = {}
    for image_name, image in images.items():
        for format_name, settings in {**FORMATS, **THUMBNAILS}.items():
            entry = {"file": image_files.file_name(0, 0, settings, settings.thumbnails_only), "seed": 0, "index": 0}
            best = float("inf")
            for _ in range(repeats):
                started = time.perf_counter()  # a thumbnail: made and encoded, as the job does
                written = thumbnails.make(image) if settings.thumbnails_only else image
                data = image_files.encode(written, settings, record, entry)
                best = min(best, time.perf_counter() - started)
            found.setdefault(image_name, {})[format_name] = {"bytes": len(data), "encode_ms": round(best * 1000, 1)}
    return found


def markdown(sweeps: Dict[str, Dict[str, int]], encoded: Dict[str, Dict[str, Any]]) -> List[str]:
    png = sweeps["png (default)"]
    lines = ["| setting (8 jobs, 256², tiny zoo) | image files | their bytes | vs png | sweep folder bytes | vs png |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, size in sweeps.items():
        lines.append(f"| {name} | {size['images']} | {size['image_bytes']:,} | {size['image_bytes'] / png['image_bytes']:.2f} "
                     f"| {size['folder_bytes']:,} | {size['folder_bytes'] / png['folder_bytes']:.2f} |")
    names = [*FORMATS, *THUMBNAILS]
    lines += ["", "| one 1024² image | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for image_name, formats in encoded.items():
        cells = [f"{v['bytes'] / 1000:,.0f} kB, {v['encode_ms']:.0f} ms" for v in formats.values()]
        lines.append(f"| {image_name} | " + " | ".join(cells) + " |")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_formats", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="encodings of each 1024² image (best kept)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        sweeps = sweep_sizes(Path(folder))
        encoded = encode_sizes(Path(folder), args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "formats.json").write_text(json.dumps({"sweeps": sweeps, "encoded": encoded}, indent=2) + "\n")
    text = "\n".join(markdown(sweeps, encoded))
    (args.out / "formats.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
