"""One job: plan, load (cached), apply scheduler and LoRA stack, generate, record.

`run(cfg)` is the plain Python entry point behind `lcm-run`; notebooks and tests call it directly.
"""
from __future__ import annotations

import functools
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from runner.sweep import batching
from runner.sweep.handoff import HANDOFF
from runner.engine import conditioning
from runner.outputs import image_files, model_hashes, records, thumbnails
from runner.config.schema import override_strings, record_of, to_container
from runner.errors import UserError
from runner.config.job_plan import JobPlan
from runner.outputs.writers import Writer
from runner.outputs.locks import FolderLock
from runner.engine.state import ENGINE

log = logging.getLogger("lcm-run")


def run(cfg: DictConfig, output_dir: Optional[Union[str, Path]] = None,
        overrides: Optional[List[str]] = None, writer: Optional[Writer] = None,
        thumbnail_files: bool = False) -> Dict[str, Any]:
    """Run one job into `output_dir` (default: the Hydra job folder) and return its run.json record.
    `overrides` are recorded as the job's overrides (default: Hydra's, when Hydra runs the job).
    With a `writer` (in a sweep), the images and run.json go through it, with the contact sheet's
    thumbnails kept; a background writer may still be completing the record returned (runner.outputs.writers).
    `thumbnail_files`: also write each image's thumbnail file, as outputs.keep=thumbnails keeps it in
    place of the image (lcm-reproduce compares them)."""
    started = time.perf_counter()
    job_dir = Path(output_dir if output_dir is not None else cfg.paths.output_dir).resolve()
    lock = FolderLock(job_dir)
    try:  # every user error surfaces here, before anything loads or is written
        plan = HANDOFF.plan_of(cfg)
        identity = HANDOFF.identity_of(cfg)
        # One process per job folder: another one running this job is waited for, then found finished.
        lock.acquire(f"another process is running the job in {job_dir}")
        previous = records.previous_job(job_dir, identity)
    except UserError as error:
        lock.release()
        _record_rejected_sweep_job(job_dir, cfg, error)
        raise
    except BaseException:
        lock.release()
        raise
    if previous == "complete":
        batching.step_down(identity)
        try:
            return _skip(job_dir)
        finally:
            lock.release()
    try:
        if previous == "partial":
            log.log(_job_level(), "redoing an unfinished attempt of this job in %s", job_dir)
            records.clear_partial(job_dir)
        record = _new_record(cfg, job_dir, plan, _overrides() if overrides is None else list(overrides))
        record["id"] = identity
        try:
            outputs = _execute(plan, job_dir, record)
        except BaseException as error:
            if not isinstance(error, UserError):
                ENGINE.reset()  # a model interrupted mid-change is not trusted: the next job reloads
            _record_outcome(job_dir, record, started, error)
            raise
    except BaseException:
        lock.release()
        raise
    finish = functools.partial(_finish_and_release, lock, job_dir, record, plan, outputs, started)
    if writer is None:
        finish(thumbnail_files=thumbnail_files)
    else:  # in a sweep: the writer also keeps thumbnails for the end-of-sweep contact sheets
        writer.submit(functools.partial(finish, keep_thumbnails=True))
    return record


def _finish_and_release(lock: FolderLock, *args: Any, **kwargs: Any) -> None:
    """_finish, then let go of the job folder: its run.json is written by then."""
    try:
        _finish(*args, **kwargs)
    finally:
        lock.release()


def _finish(job_dir: Path, record: Dict[str, Any], plan: JobPlan, outputs, started: float,
            keep_thumbnails: bool = False, thumbnail_files: bool = False) -> None:
    """Save the images (and the side-by-side picture), then run.json: the job is done when it is."""
    images, images_in, scores = outputs
    t = time.perf_counter()
    try:
        record["images"] = _save_images(job_dir, images, record, plan, scores, keep_thumbnails, thumbnail_files)
        if images_in and not _settings(record).thumbnails_only:
            record["inputs"]["side_by_side"] = conditioning.save_side_by_side(job_dir, images_in, images)
    except BaseException as error:
        _record_outcome(job_dir, record, started, error)
        raise
    record["timings"]["save"] = _since(t)
    _record_outcome(job_dir, record, started)


def _record_outcome(job_dir: Path, record: Dict[str, Any], started: float,
                    error: Optional[BaseException] = None) -> None:
    record["status"] = "ok" if error is None else "failed"
    if error is not None:
        record["error"] = f"{type(error).__name__}: {error}"
    record["timings"]["total"] = round(time.perf_counter() - started, 4)
    records.write_json(job_dir / records.RUN_JSON, record)


def _job_level() -> int:
    """A job's own lines: shown for a single run; in a sweep, the sweep's progress says enough
    (`hydra.verbose=lcm-run` shows them)."""
    in_sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return logging.DEBUG if in_sweep else logging.INFO


def _skip(job_dir: Path) -> Dict[str, Any]:
    """The same job already finished here: nothing loads, its results stay, marked skipped."""
    record = records.read_json(job_dir / records.RUN_JSON)
    if record["status"] != "skipped":
        record["status"] = "skipped"
        records.write_json(job_dir / records.RUN_JSON, record)
    log.log(_job_level(), "skipped: this job's results are already complete in %s", job_dir)
    return record


def _record_rejected_sweep_job(job_dir: Path, cfg: DictConfig, error: UserError) -> None:
    """A sweep job's folder exists before the job runs (Hydra makes it): say why it is empty."""
    in_sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if in_sweep and job_dir.is_dir() and records.previous_job_outputs(job_dir) == []:
        record = {"status": "failed", "overrides": _overrides(), "error": f"{type(error).__name__}: {error}"}
        try:  # the values are what was wrong, but they still place the job in the sweep's grid
            record["config"] = to_container(cfg)
        except Exception:  # an unresolvable config: the overrides alone say what the job was
            pass
        records.write_json(job_dir / records.RUN_JSON, record)


def _new_record(cfg: DictConfig, job_dir: Path, plan: JobPlan, overrides: List[str]) -> Dict[str, Any]:
    return {
        "status": "running",
        "id": None,
        "config": record_of(cfg, str(job_dir)),  # paths.output_dir: where it went
        "overrides": overrides,
        "pipeline": None,
        "family": plan.family.name,  # the base's, from its files: sdxl, ssd_1b or sd15
        "components": {key: source.path for key, source in plan.components.items()},
        "scheduler": None,
        "adapters": [],
        "fused": plan.fuse_lora,
        "call": dict(plan.call),
        "size": list(plan.size),  # (width, height) of the images; img2img's call has none
        "inputs": {},
        "images": [],
        "device": None,
        "process": _process(),  # which launcher worker ran it
        "timings": {},
        "cache": {},
        "versions": records.versions(),
        "error": None,
    }


def _execute(plan: JobPlan, job_dir: Path, record: Dict[str, Any]) -> Tuple[List[Any], Dict[str, Any]]:
    """Load, prepare and generate; returns the images and the conditioning images fed."""
    from runner.engine import generation, lora, models, schedulers  # torch: imported here, so that planning stays instant

    timings = record["timings"]
    t = time.perf_counter()
    loaded, hit = models.load_pipeline(plan)
    record["cache"]["base"] = "hit" if hit else "miss"
    record["components"]["base"] = loaded.folder
    if loaded.vae_folder is not None:  # loaded with the base, cached with it
        record["cache"]["vae"] = record["cache"]["base"]
        record["components"]["vae"] = loaded.vae_folder
    extra = {}
    component = plan.conditioning.component
    if component:
        model, folder, hit = models.load_conditioning_model(plan)
        extra[component] = model
        record["cache"][component] = "hit" if hit else "miss"
        record["components"][component] = folder
    pipe = models.pipeline_for(loaded, plan, extra)
    record["pipeline"] = type(pipe).__name__
    record["device"] = {"type": loaded.device, "dtype": str(loaded.dtype).replace("torch.", "")}
    timings["load"] = _since(t)
    log.log(_job_level(), "%s on %s (cache: %s)", record["pipeline"], record["device"]["type"],
             ", ".join(f"{k} {v}" for k, v in record["cache"].items()))

    t = time.perf_counter()
    record["adapters"] = lora.apply_stack(loaded, plan.adapters, plan.fuse_lora)
    record["hashes"] = model_hashes.job_hashes(record)  # A1111's, for the PNG metadata: each file read once
    compiled_now = models.compile_unet(loaded)
    if loaded.compiled:  # the first compiled job's generate time includes tracing and compiling
        record["compile"] = {**loaded.compile, "compiled_in_this_job": compiled_now}
    pipe.scheduler = schedulers.scheduler_for(loaded, plan.scheduler)
    record["scheduler"] = schedulers.describe(pipe.scheduler)
    images_in, fed = conditioning.prepare_inputs(plan.conditioning, *plan.size)
    if not _settings(record).thumbnails_only:  # outputs.keep=thumbnails keeps what the report shows only
        record["inputs"] = conditioning.save_inputs(job_dir, fed)
    timings["prepare"] = _since(t)

    t = time.perf_counter()
    arrays = generation.generate(loaded, pipe, plan, record, images_in)
    images = pipe.image_processor.numpy_to_pil(arrays)  # what output_type="pil" does
    timings["generate"] = _since(t)

    scores = [{} for _ in images]
    if plan.metrics:
        from runner.engine import metrics

        t = time.perf_counter()
        scores = metrics.score_images(plan.metrics, images, plan.call["prompt"], images_in, plan.conditioning.canny)
        timings["score"] = _since(t)
    return images, images_in, scores


def _save_images(job_dir: Path, images: List[Any], record: Dict[str, Any], plan: JobPlan,
                 scores: List[Dict[str, float]], keep_thumbnails: bool, thumbnail_files: bool) -> List[Dict[str, Any]]:
    """Each image in outputs.format, with its metadata; under outputs.keep=thumbnails its thumbnail
    (the contact sheet's cell, image_NN_seedS_thumb.<ext>) in its place."""
    settings = _settings(record)
    record["versions"].update(image_files.codec_versions(settings))
    saved = []
    for index, (image, seed, score) in enumerate(zip(images, plan.seeds, scores)):
        thumbnail_only = settings.thumbnails_only
        entry = {"file": image_files.file_name(index, seed, settings, thumbnail_only), "seed": seed, "index": index}
        if thumbnail_only:
            entry["thumbnail"] = True
        if plan.prompt_row is not None:
            entry.update(prompt_id=plan.prompt_row.id, category=plan.prompt_row.category)
        if score:
            entry["metrics"] = score
        written = thumbnails.make(image) if thumbnail_only else image
        data = image_files.encode(written, settings, record, entry)
        records.save_bytes(job_dir / entry["file"], data)
        if thumbnail_files and not thumbnail_only:
            thumb = dict(entry, file=image_files.file_name(index, seed, settings, True), thumbnail=True)
            records.save_bytes(job_dir / thumb["file"], image_files.encode(thumbnails.make(image), settings, record, thumb))
        if keep_thumbnails:  # the sheet's cell as the file on disk decodes, lossy or not
            thumbnails.keep(job_dir / entry["file"], written if settings.exact else _decoded(data))
        saved.append(entry)
    return saved


def _process() -> Dict[str, Any]:
    """The pid and host that ran the job, and under SLURM the task's job id (<array job>_<task>)."""
    process: Dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname()}
    if os.environ.get("SLURM_JOB_ID"):
        array = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        process["slurm_job"] = f"{array[0]}_{array[1]}" if all(array) else os.environ["SLURM_JOB_ID"]
    return process


def _settings(record: Dict[str, Any]) -> image_files.ImageFormat:
    return image_files.ImageFormat.of(record["config"])


def _decoded(data: bytes) -> Any:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image


def _overrides() -> List[str]:
    if not HydraConfig.initialized():
        return []
    return override_strings(HydraConfig.get().overrides.task)


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 4)
