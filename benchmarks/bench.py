"""`python -m benchmarks.bench`: how far an `lcm-run -m` sweep is from the compute floor.

Every scenario does the same jobs three ways, in one process, after one shared warm-up:

  (a) floor    the model card's diffusers code by hand: load once, loop over the jobs, save PNGs;
  (b) lcm-run  the same sweep as `lcm-run -m ...`, in-process (runner cache cleared: one load);
  (c) naive    a plain Hydra app (Hydra's basic sweeper) whose task reloads the pipeline every job.

It also times the sweepers' own per-job cost: a multirun of a task that does nothing, under Hydra's
basic sweeper and under lcm-run's. Results go to bench.json and bench.md (default benchmarks/results/);
the table is printed.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, fields, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import hydra
import numpy as np
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from PIL import Image

import runner.engine.models  # noqa: F401  (imports diffusers with transformers' import-time warnings hushed)
import diffusers
import transformers
from diffusers import (
    ControlNetModel,
    DiffusionPipeline,
    LCMScheduler,
    StableDiffusionXLControlNetPipeline,
)
from diffusers.utils import load_image

from benchmarks import bench_writer
from runner.commands import lcm_run
from runner.config import config_dir
from runner.outputs import records
from runner import zoo
from runner.report import build_report
from runner.engine.state import ENGINE

F32 = torch.float32
METHODS = ("floor", "lcm_run", "naive")
RATIOS = (("lcm_run", "floor"), ("naive", "floor"), ("naive", "lcm_run"))  # b/a, c/a, c/b
COMPUTE_PHASES = ("load", "prepare", "generate")  # run.json timings on the critical path
BASIC_SWEEPER = "hydra/sweeper=basic"
WITHOUT_RUNNER_CALLBACKS = "~hydra.callbacks.lcm_runner"
# A plain Hydra app over the project's config: Hydra's own sweeper, none of lcm-run's callbacks.
PLAIN_HYDRA = [BASIC_SWEEPER, WITHOUT_RUNNER_CALLBACKS]
# lcm-run's sweeper is the default; launch=hydra runs each job through Hydra's own run_job
SWEEPERS = {"hydra_basic": [BASIC_SWEEPER], "lcm_run_with_hydras_run_job": ["hydra.sweeper.launch=hydra"],
            "lcm_run": []}
FLOOR_SAVES = "PNG via image.save (no metadata, no fsync)"

Job = Dict[str, Any]  # config key -> value, e.g. {"sampling.seed": 3}


# -- what to run ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    size: int = 384
    seeds: int = 8
    steps: Tuple[int, ...] = (2, 4, 8)
    guidance: Tuple[float, ...] = (0.0, 1.5)
    lora_weights: Tuple[float, ...] = (0.0, 0.4, 0.8, 1.2)
    control_scales: Tuple[float, ...] = (0.0, 0.5, 1.0)
    empty_jobs: int = 20
    writer_images: int = 8  # written at writer_size², as a GPU sweep's images
    writer_size: int = 1024
    repeats: int = 2  # each method's fastest run counts: other work on the machine only adds time
    warm_up_by_hand: bool = True  # off for --quick, whose times mean nothing
    lcm_run_overrides: Tuple[str, ...] = ()  # added to (b)'s command line, e.g. device.channels_last=true


QUICK = Settings(size=64, seeds=2, steps=(2,), guidance=(0.0, 1.5), lora_weights=(0.0, 0.8),
                 control_scales=(0.0, 1.0), empty_jobs=2, writer_images=2, writer_size=64, repeats=1,
                 warm_up_by_hand=False)


@dataclass(frozen=True)
class Card:
    """A model-card workflow written by hand: `load` the pipeline (and what the card computes once),
    then `generate` one job's image with it."""

    load: Callable[[Path, Job], Dict[str, Any]]
    generate: Callable[[Dict[str, Any], Job], Image.Image]


@dataclass(frozen=True)
class Scenario:
    name: str
    experiment: str
    card: Card
    fixed: Job  # the card's value of every key the card reads, by config key
    swept: Dict[str, Tuple[Any, ...]]  # crossed, like Hydra's basic sweeper
    lcm_run_extra: Tuple[str, ...] = ()  # Settings.lcm_run_overrides

    def jobs(self) -> List[Job]:
        return [dict(zip(self.swept, values)) for values in itertools.product(*self.swept.values())]

    def values(self, job: Job) -> Job:
        return {**self.fixed, **job}

    def overrides(self) -> List[str]:
        size = [f"sampling.height={self.fixed['sampling.height']}", f"sampling.width={self.fixed['sampling.width']}"]
        sweeps = [f"{key}={','.join(str(v) for v in values)}" for key, values in self.swept.items()]
        return [f"experiment={self.experiment}", "zoo=tiny", "device=cpu", *size, *sweeps]

    def lcm_run_overrides(self) -> List[str]:
        return [*self.overrides(), *self.lcm_run_extra]


# -- the model card's code, by hand -----------------------------------------------------------
def _with_lcm(pipe: Any, zoo_dir: Path, fuse: bool, adapter_name: Optional[str] = None) -> Any:
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(str(zoo_dir / "lcm-lora-sdxl"), adapter_name=adapter_name)
    if fuse:
        pipe.fuse_lora()
    return pipe


def _card_call(job: Job) -> Dict[str, Any]:
    return dict(prompt=job["sampling.prompt"], num_inference_steps=job["sampling.steps"],
                guidance_scale=job["sampling.guidance_scale"], height=job["sampling.height"],
                width=job["sampling.width"], generator=torch.Generator("cpu").manual_seed(job["sampling.seed"]))


def _load_t2i(zoo_dir: Path, job: Job) -> Dict[str, Any]:
    pipe = DiffusionPipeline.from_pretrained(str(zoo_dir / "sdxl-base"), dtype=F32)
    return {"pipe": _with_lcm(pipe, zoo_dir, fuse=True)}


def _generate_t2i(loaded: Dict[str, Any], job: Job) -> Image.Image:
    return loaded["pipe"](**_card_call(job)).images[0]


def _load_papercut(zoo_dir: Path, job: Job) -> Dict[str, Any]:
    pipe = _with_lcm(DiffusionPipeline.from_pretrained(str(zoo_dir / "sdxl-base"), dtype=F32), zoo_dir,
                     fuse=False, adapter_name="lcm")
    pipe.load_lora_weights(str(zoo_dir / "papercut"), weight_name="papercut.safetensors", adapter_name="papercut")
    return {"pipe": pipe}


def _generate_papercut(loaded: Dict[str, Any], job: Job) -> Image.Image:
    pipe = loaded["pipe"]
    pipe.set_adapters(["lcm", "papercut"], adapter_weights=[1.0, job["lora.papercut.weight"]])
    return pipe(**_card_call(job)).images[0]


def _card_canny(path: Path, size: int) -> Image.Image:
    edges = cv2.Canny(np.array(load_image(str(path)).resize((size, size))), 100, 200)[:, :, None]
    return Image.fromarray(np.concatenate([edges, edges, edges], axis=2))


def _load_controlnet(zoo_dir: Path, job: Job) -> Dict[str, Any]:
    controlnet = ControlNetModel.from_pretrained(str(zoo_dir / "controlnet-canny-sdxl"), dtype=F32)
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(str(zoo_dir / "sdxl-base"), controlnet=controlnet,
                                                               dtype=F32)
    canny = _card_canny(zoo_dir / "images" / "vermeer.png", job["sampling.width"])
    return {"pipe": _with_lcm(pipe, zoo_dir, fuse=True), "canny": canny}


def _generate_controlnet(loaded: Dict[str, Any], job: Job) -> Image.Image:
    return loaded["pipe"](**_card_call(job), image=loaded["canny"], cross_attention_kwargs={"scale": 1.0},
                          controlnet_conditioning_scale=job["conditioning.conditioning_scale"]).images[0]


T2I = Card(_load_t2i, _generate_t2i)
PAPERCUT = Card(_load_papercut, _generate_papercut)
CONTROLNET = Card(_load_controlnet, _generate_controlnet)


def scenarios(settings: Settings) -> List[Scenario]:
    size = {"sampling.height": settings.size, "sampling.width": settings.size, "sampling.seed": 0}
    t2i = {"sampling.prompt": "Self-portrait oil painting, a beautiful cyborg with golden hair, 8k",
           "sampling.steps": 4, "sampling.guidance_scale": 0.0, **size}
    papercut = {"sampling.prompt": "papercut, a cute fox", "sampling.steps": 4, "sampling.guidance_scale": 1.0,
                "lora.papercut.weight": 0.8, **size}
    controlnet = {"sampling.prompt": "picture of the mona lisa", "sampling.steps": 5,
                  "sampling.guidance_scale": 1.5, "conditioning.conditioning_scale": 0.5, **size}
    extra = settings.lcm_run_overrides
    return [
        Scenario("seed_sweep", "t2i", T2I, t2i, {"sampling.seed": tuple(range(settings.seeds))}, extra),
        Scenario("steps_x_guidance", "t2i", T2I, t2i,
                 {"sampling.steps": settings.steps, "sampling.guidance_scale": settings.guidance}, extra),
        Scenario("lora_weight", "lora_papercut", PAPERCUT, papercut, {"lora.papercut.weight": settings.lora_weights},
                 extra),
        Scenario("controlnet_scale", "controlnet_canny", CONTROLNET, controlnet,
                 {"conditioning.conditioning_scale": settings.control_scales}, extra),
    ]


# -- the three ways to run a scenario ---------------------------------------------------------
def png_name(job: Job) -> str:
    return "_".join(f"{key}={value}" for key, value in job.items()) + ".png"


def run_floor(scenario: Scenario, zoo_dir: Path, folder: Path) -> Dict[str, float]:
    folder.mkdir(parents=True)
    started = time.perf_counter()
    loaded = scenario.card.load(zoo_dir, scenario.fixed)
    spent = {"load": _since(started), "generate": 0.0, "save": 0.0}
    for job in scenario.jobs():
        t = time.perf_counter()
        image = scenario.card.generate(loaded, scenario.values(job))
        spent["generate"] += _since(t)
        t = time.perf_counter()
        image.save(folder / png_name(job))
        spent["save"] += _since(t)
    return {"wall": _since(started), **spent}


def run_lcm(scenario: Scenario, folder: Path) -> Dict[str, float]:
    ENGINE.reset()  # so that it pays its one model load, as the floor does
    started = time.perf_counter()
    run_hydra(lcm_run.run_app, [*scenario.lcm_run_overrides(), f"hydra.sweep.dir={folder}"])
    wall = _since(started)
    return {"wall": wall, **runner_breakdown(folder, wall)}


def run_naive(scenario: Scenario, zoo_dir: Path, folder: Path) -> Dict[str, float]:
    def task(cfg: DictConfig) -> None:
        job = {key: OmegaConf.select(cfg, key) for key in scenario.swept}
        loaded = scenario.card.load(zoo_dir, scenario.values(job))  # every job reloads everything
        image = scenario.card.generate(loaded, scenario.values(job))
        image.save(Path(HydraConfig.get().runtime.output_dir) / png_name(job))

    started = time.perf_counter()
    run_hydra(plain_hydra_app(task), [*scenario.overrides(), *PLAIN_HYDRA, f"hydra.sweep.dir={folder}"])
    return {"wall": _since(started)}


def plain_hydra_app(task: Callable[[DictConfig], None]) -> Callable[[], Any]:
    return hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")(task)


def run_hydra(app: Callable[[], Any], overrides: Sequence[str], multirun: bool = True) -> None:
    """Run a Hydra app's multirun (or single run) in this process, as its console script would with
    these arguments."""
    GlobalHydra.instance().clear()  # a Hydra app initialises it once per process
    argv = sys.argv
    sys.argv = ["lcm-run", *(["-m"] if multirun else []), *overrides]
    try:
        app()
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()


def runner_breakdown(sweep_dir: Path, wall: float) -> Dict[str, float]:
    """Where lcm-run's wall time went. Load, prepare and generate are summed from the run.json files
    (a batch's call is timed by its first job). Saving is shown, not subtracted: on a CPU device it
    is inline (so in "everything else"), on a GPU in writer threads beside the next job. The
    end-of-sweep report is timed again on the finished folder (it rebuilds the same files). The rest
    is the sweeper, Hydra's per-job work, planning, records, saving and callbacks."""
    jobs = [records.read_json(path) for path in sweep_dir.glob(f"*/{records.RUN_JSON}")]
    spent = {phase: sum(job["timings"].get(phase, 0.0) for job in jobs) for phase in (*COMPUTE_PHASES, "save")}
    started = time.perf_counter()
    build_report(sweep_dir)
    report = _since(started)
    critical = sum(spent[phase] for phase in COMPUTE_PHASES)
    return {**spent, "report": report, "everything_else": wall - critical - report,
            "batched_jobs": sum(1 for job in jobs if "batch" in job)}


# -- honesty checks ---------------------------------------------------------------------------
def pixel_differences(scenario: Scenario, folders: Dict[str, Path]) -> Dict[str, int]:
    """The largest difference (0-255) between the floor's pixels and lcm-run's / the naive app's,
    over the first and last job."""
    jobs = scenario.jobs()
    compared = [jobs[0], jobs[-1]] if len(jobs) > 1 else jobs
    found = {"lcm_run": lambda job: _runner_image(folders["lcm_run"], job),
             "naive": lambda job: next(folders["naive"].glob(f"*/{png_name(job)}"))}
    return {method: max(_max_difference(folders["floor"] / png_name(job), find(job)) for job in compared)
            for method, find in found.items()}


def _runner_image(sweep_dir: Path, job: Job) -> Path:
    for path in sweep_dir.glob(f"*/{records.RUN_JSON}"):
        record = records.read_json(path)
        if all(_lookup(record["config"], key) == value for key, value in job.items()):
            return path.parent / record["images"][0]["file"]
    raise LookupError(f"no lcm-run job in {sweep_dir} ran {job}")


def _lookup(config: Dict[str, Any], key: str) -> Any:
    return functools.reduce(lambda node, part: node[part], key.split("."), config)


def _max_difference(a: Path, b: Path) -> int:
    with Image.open(a) as first, Image.open(b) as second:
        pixels = [np.asarray(image.convert("RGB"), dtype=np.int16) for image in (first, second)]
    return int(np.abs(pixels[0] - pixels[1]).max())


# -- the sweepers alone ----------------------------------------------------------------------
def measure_empty_task(jobs: int, repeats: int, folder: Path) -> Dict[str, Dict[str, Any]]:
    """Each sweeper's per-job cost: a multirun over the project's config whose task does nothing,
    `jobs` jobs against one (fastest of `repeats`); the difference is the cost of a job."""
    app = plain_hydra_app(lambda cfg: None)
    return {name: _empty_sweep(app, [*choice, WITHOUT_RUNNER_CALLBACKS], jobs, repeats, folder / name)
            for name, choice in SWEEPERS.items()}


def _empty_sweep(app: Callable[[], Any], choice: List[str], jobs: int, repeats: int, folder: Path) -> Dict[str, Any]:
    walls = {1: float("inf"), jobs: float("inf")}
    for attempt, count in itertools.product(range(repeats), (1, jobs)):
        started = time.perf_counter()
        run_hydra(app, ["experiment=t2i", "zoo=tiny", "device=cpu", *choice, f"sampling.seed=range(0,{count})",
                        f"hydra.sweep.dir={folder / f'{count}-{attempt}'}"])
        walls[count] = min(walls[count], _since(started))
    return {"jobs": jobs, "one_job_s": round(walls[1], 3), "n_jobs_s": round(walls[jobs], 3),
            "ms_per_job": round((walls[jobs] - walls[1]) / (jobs - 1) * 1000, 1)}


# -- one run, start to end --------------------------------------------------------------------
def warm_up(all_scenarios: List[Scenario], zoo_dir: Path, folder: Path, by_hand: bool = True) -> None:
    """Pay the process's one-off costs (imports, first kernels at each shape, file cache) before any
    timing, so that whichever method runs first is not charged for them. The one-job lcm-run sweep
    always runs (its run.json serves the write measurement); `by_hand=False` leaves out the card's
    calls."""
    for scenario in all_scenarios if by_hand else []:
        loaded = scenario.card.load(zoo_dir, scenario.fixed)
        for job in (scenario.jobs()[0], scenario.jobs()[-1]):
            scenario.card.generate(loaded, scenario.values(job))
    ENGINE.reset()
    one_job = replace(all_scenarios[0], swept={})
    run_hydra(lcm_run.run_app, [*one_job.lcm_run_overrides(), f"hydra.sweep.dir={folder}"])


def bench_scenario(scenario: Scenario, zoo_dir: Path, work: Path, repeats: int) -> Dict[str, Any]:
    folders = {method: work / scenario.name / method for method in METHODS}
    print(f"== {scenario.name}: {len(scenario.jobs())} jobs, floor / lcm-run / naive", flush=True)
    runs = {"floor": lambda folder: run_floor(scenario, zoo_dir, folder),
            "lcm_run": lambda folder: run_lcm(scenario, folder),
            "naive": lambda folder: run_naive(scenario, zoo_dir, folder)}
    attempts: Dict[str, List[Dict[str, float]]] = {method: [] for method in METHODS}
    # The methods take turns, so that a busy spell hits one attempt of each, and every other round
    # runs them in reverse, so that a slow drift of the machine favours none of them.
    for attempt in range(repeats):
        for method in (METHODS if attempt % 2 == 0 else METHODS[::-1]):
            attempts[method].append(runs[method](folders[method] / str(attempt)))
    differences = pixel_differences(scenario, {method: folder / "0" for method, folder in folders.items()})
    return summarize(scenario, attempts, differences)


def summarize(scenario: Scenario, attempts: Dict[str, List[Dict[str, float]]],
              differences: Dict[str, int]) -> Dict[str, Any]:
    """Each method's fastest attempt counts; the ratios are computed from the rounded times shown.
    The paired ratios are the median over rounds of each round's own ratio: the methods of one round
    run minutes apart at most, so a spell that slows the whole machine cancels out of them."""
    best = {method: min(results, key=lambda result: result["wall"]) for method, results in attempts.items()}
    wall = {method: round(result["wall"], 3) for method, result in best.items()}
    jobs = len(scenario.jobs())
    # lcm-run's time beyond its own load, prepare and generate: measured within one run, it does not
    # carry the floor's run-to-run noise.
    outside = best["lcm_run"]["report"] + best["lcm_run"]["everything_else"]
    return {
        "name": scenario.name,
        "jobs": jobs,
        "lcm_run_args": ["-m", *scenario.lcm_run_overrides()],
        "wall_s": wall,
        "ratios": {"lcm_run/floor": round(wall["lcm_run"] / wall["floor"], 3),
                   "naive/floor": round(wall["naive"] / wall["floor"], 3),
                   "naive/lcm_run": round(wall["naive"] / wall["lcm_run"], 3)},
        "paired_ratios": {f"{top}/{bottom}": _median_ratio(attempts[top], attempts[bottom])
                          for top, bottom in RATIOS},
        "lcm_run_overhead_ms_per_job": round((wall["lcm_run"] - wall["floor"]) / jobs * 1000, 1),
        "lcm_run_outside_model_work_ms_per_job": round(outside / jobs * 1000, 1),
        "images_equal": {method: difference == 0 for method, difference in differences.items()},
        "pixels_max_difference": differences,
        "lcm_run_batched_jobs": best["lcm_run"]["batched_jobs"],
        "attempts_wall_s": {method: [round(r["wall"], 3) for r in results] for method, results in attempts.items()},
        # every round's phases, not only the fastest's: where a slow attempt lost its time
        "attempts_breakdown_s": {method: [_rounded({k: v for k, v in r.items() if k not in ("wall", "batched_jobs")})
                                          for r in attempts[method]] for method in ("floor", "lcm_run")},
        "floor_breakdown_s": _rounded({k: v for k, v in best["floor"].items() if k != "wall"}),
        "lcm_run_breakdown_s": _rounded({k: v for k, v in best["lcm_run"].items()
                                         if k not in ("wall", "batched_jobs")}),
    }


def _median_ratio(tops: List[Dict[str, float]], bottoms: List[Dict[str, float]]) -> float:
    return round(statistics.median(top["wall"] / bottom["wall"] for top, bottom in zip(tops, bottoms)), 3)


def machine() -> Dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "hydra-core": hydra.__version__,
        "lcm-runner": metadata.version("lcm-runner"),
        "commit": _commit(),
    }


def _commit() -> Optional[str]:
    """The checkout's commit, `+dirty` with uncommitted changes: the runner changes fast."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=Path(__file__).parent,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an installed wheel)
        return None
    return f"{head}+dirty" if dirty else head


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.machine())


def to_markdown(result: Dict[str, Any]) -> str:
    return "\n".join([*_preamble(result), "", *_ratio_table(result["scenarios"]), "",
                      "Where the time goes (s, summed over the jobs; lcm-run's from its run.json files):", "",
                      *_breakdown_table(result["scenarios"]), "", *_sweeper_lines(result["empty_task"]), "",
                      *bench_writer.markdown_lines(result["writes"]), ""])


def _preamble(result: Dict[str, Any]) -> List[str]:
    m, s = result["machine"], result["settings"]
    extra = s.get("lcm_run_overrides") or []
    configured = f"with `{' '.join(extra)}`" if extra else "as configured by default"
    return [
        "# lcm-runner: sweeps against the compute floor",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), torch {m['torch']} with {m['torch_threads']} threads, "
        f"diffusers {m['diffusers']}, hydra-core {m['hydra-core']}, Python {m['python']}; lcm-runner at "
        f"{m['commit'] or 'an unknown commit'}. Tiny zoo, "
        f"{s['device']}, float32, {s['size']}x{s['size']}; each time is the fastest of {s['repeats']} run(s), "
        "the methods taking turns (in reverse every other round). Paired: the median over rounds of each "
        "round's own ratio.",
        "",
        f"(a) floor: the card's diffusers code, pipeline loaded once, each image saved as {s['floor_saves']}. "
        f"(b) lcm-run: `lcm-run -m` in-process, one model load, {configured} (its sweeper, "
        "PNG metadata, run.json, end-of-sweep report). (c) naive: a plain Hydra app (basic sweeper) that "
        "reloads the pipeline every job, then saves a PNG. Pixels compared with (a) on the first and last job.",
    ]


def _ratio_table(rows: List[Dict[str, Any]]) -> List[str]:
    lines = ["| scenario | jobs | (a) floor s | (b) lcm-run s | (c) naive s | b/a | c/a | c/b "
             "| b/a, c/a, c/b paired | b over a, ms/job | b = a pixels | c = a pixels |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        w, ratio, diff = r["wall_s"], r["ratios"], r["pixels_max_difference"]
        batched = r["lcm_run_batched_jobs"] > 0
        paired = " / ".join(f"{r['paired_ratios'][f'{top}/{bottom}']:.2f}" for top, bottom in RATIOS)
        lines.append(f"| {r['name']} | {r['jobs']} | {w['floor']:.2f} | {w['lcm_run']:.2f} | {w['naive']:.2f} "
                     f"| {ratio['lcm_run/floor']:.2f} | {ratio['naive/floor']:.2f} | {ratio['naive/lcm_run']:.2f} "
                     f"| {paired} | {r['lcm_run_overhead_ms_per_job']:.0f} | {_pixels_cell(diff['lcm_run'], batched)} "
                     f"| {_pixels_cell(diff['naive'], False)} |")
    return lines


def _pixels_cell(difference: int, batched: bool) -> str:
    if difference == 0:
        return "yes"
    return f"no (max diff {difference}/255{', seeds batched' if batched else ''})"


def _breakdown_table(rows: List[Dict[str, Any]]) -> List[str]:
    lines = ["| scenario | floor load | floor generate | floor save | lcm-run load | prepare | generate "
             "| save | report | everything else | report + else, ms/job |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        f, b = r["floor_breakdown_s"], r["lcm_run_breakdown_s"]
        cells = [f["load"], f["generate"], f["save"], b["load"], b["prepare"], b["generate"], b["save"], b["report"],
                 b["everything_else"]]
        lines.append(f"| {r['name']} | " + " | ".join(f"{cell:.2f}" for cell in cells)
                     + f" | {r['lcm_run_outside_model_work_ms_per_job']:.0f} |")
    return lines


def _sweeper_lines(empty: Dict[str, Dict[str, Any]]) -> List[str]:
    lines = ["Sweepers alone (multirun of a no-op task over the project's config, no callbacks):", ""]
    labels = {"hydra_basic": "Hydra's basic sweeper",
              "lcm_run_with_hydras_run_job": "lcm-run's sweeper with Hydra's run_job (`hydra.sweeper.launch=hydra`)",
              "lcm_run": "lcm-run's sweeper (its lean run_job, the default)"}
    for name, label in labels.items():
        if name not in empty:
            continue
        e = empty[name]
        lines.append(f"- {label}: {e['jobs']} jobs in {e['n_jobs_s']:.2f} s, 1 job in {e['one_job_s']:.2f} s: "
                     f"**{e['ms_per_job']:.0f} ms/job**")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    settings, out, only = parse_args(argv)
    for library in (diffusers.utils.logging, transformers.utils.logging):  # the same for all three methods
        library.set_verbosity_error()
        library.disable_progress_bar()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    zoo_dir = zoo.ensure_zoo()
    all_scenarios = [scenario for scenario in scenarios(settings) if not only or scenario.name in only]
    with tempfile.TemporaryDirectory(prefix=".bench-work-", dir=out) as tmp:
        work = Path(tmp)
        warm_up(all_scenarios, zoo_dir, work / "warm-up", by_hand=settings.warm_up_by_hand)
        empty = measure_empty_task(settings.empty_jobs, settings.repeats, work / "empty-task")
        a_record = records.read_json(next((work / "warm-up").glob(f"*/{records.RUN_JSON}")))
        written = bench_writer.measure_writes(a_record, settings.writer_images, settings.writer_size,
                                              settings.repeats, work / "writes")
        results = [bench_scenario(scenario, zoo_dir, work, settings.repeats) for scenario in all_scenarios]
    result = {"machine": machine(),
              "settings": {**_settings_dict(settings), "device": "cpu", "floor_saves": FLOOR_SAVES},
              "scenarios": results, "empty_task": empty, "writes": written}
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    table = to_markdown(result)
    (out / "bench.md").write_text(table)
    print(table)
    return 0


def parse_args(argv: Optional[Sequence[str]]) -> Tuple[Settings, Path, List[str]]:
    default = Settings()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for bench.json and bench.md")
    parser.add_argument("--quick", action="store_true",
                        help=f"a tiny version ({QUICK.size}x{QUICK.size}, 2 jobs per scenario), for tests")
    parser.add_argument("--size", type=int, help=f"image height and width (default {default.size})")
    parser.add_argument("--seeds", type=int, help=f"jobs in the seed sweep (default {default.seeds})")
    parser.add_argument("--steps", type=_ints, help=f"step counts (default {_listed(default.steps)})")
    parser.add_argument("--guidance", type=_floats, help=f"guidance scales (default {_listed(default.guidance)})")
    parser.add_argument("--lora-weights", type=_floats,
                        help=f"papercut weights (default {_listed(default.lora_weights)})")
    parser.add_argument("--control-scales", type=_floats,
                        help=f"ControlNet scales (default {_listed(default.control_scales)})")
    parser.add_argument("--empty-jobs", type=int,
                        help=f"jobs in the no-op Hydra multirun (default {default.empty_jobs})")
    parser.add_argument("--writer-images", type=int,
                        help=f"images in the write-speed measurement (default {default.writer_images})")
    parser.add_argument("--writer-size", type=int,
                        help=f"their height and width (default {default.writer_size})")
    parser.add_argument("--repeats", type=int,
                        help=f"runs of each method; the fastest counts (default {default.repeats})")
    parser.add_argument("--lcm-run-override", dest="lcm_run_overrides", action="append", metavar="KEY=VALUE",
                        help="add this override to lcm-run's command line (repeatable), e.g. device.channels_last=true")
    names = [scenario.name for scenario in scenarios(default)]
    parser.add_argument("--only", type=lambda text: text.split(","), default=[],
                        help=f"run only these scenarios, comma-separated ({', '.join(names)})")
    args = parser.parse_args(argv)
    unknown = [name for name in args.only if name not in names]
    if unknown:
        parser.error(f"--only {','.join(args.only)}: no scenario named {', '.join(unknown)}; "
                     f"the scenarios are {', '.join(names)}")
    given = {f.name: getattr(args, f.name) for f in fields(Settings) if getattr(args, f.name, None) is not None}
    if args.lcm_run_overrides:
        given["lcm_run_overrides"] = tuple(args.lcm_run_overrides)
    settings = replace(QUICK if args.quick else default, **given)
    if settings.size % 8 or settings.size < 8:
        parser.error(f"--size {settings.size}: SDXL needs a multiple of 8")
    if min(settings.seeds, settings.repeats, settings.writer_images, settings.writer_size) < 1 or settings.empty_jobs < 2:
        parser.error("--seeds, --repeats, --writer-images and --writer-size need at least 1, --empty-jobs at least 2")
    return settings, args.out, args.only


def _ints(text: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def _floats(text: str) -> Tuple[float, ...]:
    return tuple(float(part) for part in text.split(","))


def _listed(values: Sequence[Any]) -> str:
    return ",".join(str(v) for v in values)


def _settings_dict(settings: Settings) -> Dict[str, Any]:
    return {f.name: getattr(settings, f.name) for f in fields(Settings)}


def _rounded(values: Dict[str, float]) -> Dict[str, float]:
    return {key: round(value, 3) for key, value in values.items()}


def _since(start: float) -> float:
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
