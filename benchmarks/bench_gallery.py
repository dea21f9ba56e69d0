"""`python -m benchmarks.bench_gallery`: the sweep gallery in headless Chromium, before and after paging.

For each size (1,000 and 10,000 images by default) one synthetic sweep folder (tests.synthetic_sweep:
64² PNGs and run.json written by the runner's writers, one clip_score an image) gets two galleries
side by side: `before.html`, written by the gallery of commit BEFORE (every image a <figure> of the
page, thumbnails loading="lazy"), and `after.html`, written by this checkout's (one JSON array, 100
figures a page). One Chromium serves every load (tests.browser); each page is opened once first and
not counted, so no figure includes the browser's start. Then, in turns, REPEATS times each:

- render: from the navigation's start to two animation frames after the load event (the first
  screen drawn and the page's script done);
- sort: choosing "clip_score, best first", from the change event to two frames later;
- filter: then choosing the second seed, the same way;
- elements: the DOM's element count once drawn;
- write: the seconds `write_gallery` takes (once, from the loaded sweep).

The best of the repeats is reported, with after/before ratios. Besides, the end-of-sweep cost of
the gallery's thumbnail files: 100 images of 1024² (--thumbnail-images; noise, so that decoding a PNG
costs what it does on real images), their thumbnails first kept as lcm-run's writer keeps them,
then read back from disk (past the writer's memory cap), then a rebuild that finds them written. Results go to
bench_gallery.json and .md in --out.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import types

import numpy as np
from PIL import Image
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from runner.outputs import records, thumbnails
from runner.report import gallery
from runner.report.gallery_thumbnails import FOLDER, write_gallery_thumbnails
from runner.report.sweep_folder import load_sweep
from tests.browser import Chromium
from tests.synthetic_sweep import write_sweep

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "d7b3d9ff86220124f214c5f4c331bbf66f0d1a46"  # the last commit whose gallery drew every figure
STEPS, GUIDANCE = [1, 2, 4, 8], [0.0, 1.0]  # with seeds: the sweep's three axes

FRAMES = "new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"
RENDER = f"{FRAMES}.then(() => performance.now())"  # ms since the navigation started
CHOOSE = """(async () => {{
  const select = document.querySelector('{selector}');
  const started = performance.now();
  select.value = [...select.options].find(option => {pick}).value;
  select.dispatchEvent(new Event('change'));
  await """ + FRAMES + """;
  return performance.now() - started;
}})()"""
SORT = CHOOSE.format(selector="select[data-sort]", pick="option.dataset.metric === 'clip_score'")
FILTER = CHOOSE.format(selector='select[data-filter="0"]', pick="option.index === 2")
ELEMENTS = "document.getElementsByTagName('*').length"


def gallery_of(commit: str) -> types.ModuleType:
    """runner/report/gallery.py as it was at `commit`, loaded as a module of its own."""
    try:
        source = subprocess.run(["git", "show", f"{commit}:runner/report/gallery.py"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise SystemExit(f"bench_gallery: cannot read the gallery of commit {commit} with git ({error}); "
                         "run it in a clone with that commit, or name another with --before") from error
    module = types.ModuleType("gallery_before")
    exec(compile(source, f"{commit[:10]}:runner/report/gallery.py", "exec"), module.__dict__)
    return module


def write_galleries(folder: Path, images: int, before: types.ModuleType) -> Dict[str, Dict[str, Any]]:
    """{"before"|"after": {"page": the gallery, "write_s": seconds to write it}}."""
    write_sweep(folder, STEPS, GUIDANCE, list(range(images // (len(STEPS) * len(GUIDANCE)))))
    sweep, written = load_sweep(folder), {}
    for way, module in (("before", before), ("after", gallery)):
        started = time.perf_counter()
        page = module.write_gallery(sweep, [])
        written[way] = {"write_s": time.perf_counter() - started, "page": page.rename(folder / f"{way}.html")}
    return written


def measure(browser: Chromium, page: Path) -> Dict[str, float]:
    browser.open(page.as_uri())
    timings = {"render_s": browser.evaluate(RENDER) / 1000, "elements": browser.evaluate(ELEMENTS)}
    timings["sort_s"] = browser.evaluate(SORT) / 1000
    timings["filter_s"] = browser.evaluate(FILTER) / 1000
    return timings


def thumbnail_cost(folder: Path, images: int = 100, side: int = 1024) -> Dict[str, float]:
    """Seconds an image for write_gallery_thumbnails: from kept thumbnails, from disk, already written."""
    write_sweep(folder, [1], [0.0], list(range(images)), size=(side, side))
    noise = np.random.default_rng(0)
    for path in folder.glob("*/image_*.png"):
        image = Image.fromarray(noise.integers(0, 256, (side, side, 3), dtype=np.uint8))
        records.save_png(path, image)
        thumbnails.keep(path, image)
    sweep, seconds = load_sweep(folder), {}
    for way in ("kept", "from_disk", "already_written"):
        if way == "from_disk":
            thumbnails.forget()
            shutil.rmtree(folder / FOLDER)
        started = time.perf_counter()
        write_gallery_thumbnails(sweep)
        seconds[way] = (time.perf_counter() - started) / images
    return seconds


def run(sizes: List[int], repeats: int, commit: str, thumbnail_images: int = 100) -> Dict[str, Any]:
    before = gallery_of(commit)
    results: Dict[str, Any] = {"before_commit": commit, "repeats": repeats, "sizes": []}
    folder = Path(tempfile.mkdtemp(prefix="bench-gallery-"))
    try:
        with Chromium(timeout=600) as browser:
            browser.open("about:blank")
            blank = browser.evaluate(RENDER) / 1000
            results["blank_page_s"] = blank
            for images in sizes:
                written = write_galleries(folder / str(images), images, before)
                pages = {way: done["page"] for way, done in written.items()}
                runs: Dict[str, List[Dict[str, float]]] = {way: [] for way in pages}
                for way, page in pages.items():
                    measure(browser, page)  # warm-up: not counted
                for _ in range(repeats):
                    for way, page in pages.items():
                        runs[way].append(measure(browser, page))
                best = {way: {key: min(r[key] for r in done) for key in done[0]} for way, done in runs.items()}
                for way in best:
                    best[way]["write_s"] = written[way]["write_s"]
                results["sizes"].append({"images": images, "html_bytes": {w: p.stat().st_size for w, p in pages.items()},
                                         "best": best, "runs": runs})
                shutil.rmtree(folder / str(images), ignore_errors=True)
        results["thumbnails_s_per_image"] = thumbnail_cost(folder / "thumbnails", thumbnail_images)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return results


def markdown(results: Dict[str, Any]) -> str:
    keys = ("write_s", "render_s", "sort_s", "filter_s", "elements")
    lines = ["| images | gallery | write (s) | render (s) | sort by a metric (s) | filter (s) | DOM elements | page (MB) |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for size in results["sizes"]:
        best = size["best"]
        for way in ("before", "after"):
            b = best[way]
            lines.append(f"| {size['images']:,} | {way} | {b['write_s']:.3f} | {b['render_s']:.3f} | {b['sort_s']:.3f} "
                         f"| {b['filter_s']:.3f} | {b['elements']:,.0f} | {size['html_bytes'][way] / 1e6:.2f} |")
        ratio = {key: best["after"][key] / best["before"][key] for key in keys}
        lines.append(f"| {size['images']:,} | after / before | " + " | ".join(f"{ratio[key]:.3f}" for key in keys) + " | |")
    lines.append(f"\nA blank page renders in {results['blank_page_s']:.3f} s in the same browser.")
    cost = results["thumbnails_s_per_image"]
    lines.append(f"Thumbnail files at a sweep's end, 1024² images: {cost['kept'] * 1000:.1f} ms an image from kept "
                 f"thumbnails, {cost['from_disk'] * 1000:.1f} ms read back from disk, "
                 f"{cost['already_written'] * 1000:.2f} ms when a rebuild finds them written.")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_gallery", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="images per sweep")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--thumbnail-images", type=int, default=100, help="1024² images whose thumbnails are timed")
    parser.add_argument("--before", default=BEFORE, help="the commit whose gallery is the baseline")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    results = run(args.sizes, args.repeats, args.before, args.thumbnail_images)
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    table = markdown(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_gallery.json").write_text(json.dumps(results, indent=2))
    (args.out / "bench_gallery.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
