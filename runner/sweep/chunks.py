"""Many grid points in one launcher job: `chunk`, for launchers that start a process per job (SLURM).

A SLURM array task that renders one grid point pays for loading SDXL every time. `chunk` lists inner
overrides in Hydra's own grammar; the job runs every point of that inner grid, one after another, in
its own process, so the model loads once per task:

    lcm-run -m hydra/launcher=slurm zoo=tiny sampling.steps=1,2 'chunk="sampling.seed=0,1,2,3"'

makes 2 Hydra jobs (one per step count), 8 grid points. Chunks sweep like any value
(`'chunk="sampling.seed=0,1","sampling.seed=2,3"'` splits the seeds over two jobs each).

The on-disk contract is kept: every grid point is a job folder of its own directly under the sweep
folder, with its own run.json and images: point 0 in the Hydra job's folder (`<sweep>/<job>/`, beside
Hydra's `.hydra/` and log), point k in `<sweep>/<job>-<k>/`. Each point is composed exactly as Hydra
composes the same job without `chunk` (chunk's overrides appended to the job's, `chunk` left out), so
its config, its identity (runner.config.schema.job_identity) and its run.json are those of the unchunked
job; points that differ only in seed or prompt share one pipeline call, in the groups the sweeper
makes in one process (runner.sweep.batching), so the pixels are those of the sweep run in one process.
The summary, contact sheets, gallery (runner.report, reading `<sweep>/*/run.json`) and resume (rerun
the same command: finished points are skipped) see every point.

Torch-free at import (the CLI imports it): running a point imports runner.run.
"""
from __future__ import annotations

import copy
import logging
import shlex
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict, read_write

from runner.outputs import records
from runner.errors import UserError
from runner.config.schema import override_strings

log = logging.getLogger("lcm-run")

KEY = "chunk"


# -- the grid points of a job ----------------------------------------------------------------------
def inner_grid(chunk: str) -> List[List[str]]:
    """The inner overrides of each grid point of `chunk` (Hydra's grammar: comma lists, range(),
    several keys separated by spaces), expanded as Hydra's basic sweeper expands a command line."""
    try:
        arguments = shlex.split(str(chunk))
        parsed = OverridesParser.create().parse_overrides(arguments)
    except (ValueError, HydraException) as error:
        raise UserError(f"{KEY}={chunk!r} is not a list of overrides in Hydra's grammar ({_first_line(error)}). "
                        f"Write it like {KEY}='sampling.seed=0,1,2,3' (quoted on the command line: "
                        f"'{KEY}=\"sampling.seed=0,1,2,3\"').") from None
    if not parsed:
        raise UserError(f"{KEY}={chunk!r} lists no override; give the values to run in this job, like "
                        f"{KEY}='sampling.seed=0,1,2,3', or leave {KEY} out.")
    for override in parsed:
        key = override.key_or_group.lstrip("+~")
        if key == KEY or key.startswith("hydra"):
            raise UserError(f"{KEY}={chunk!r} sets {key}, which a chunk cannot: it lists the job's own "
                            "settings (sampling.seed=..., lora.papercut.weight=..., scheduler=...).")
    return [list(point) for batch in BasicSweeper.split_arguments(parsed, None) for point in batch]


def grid_points(overrides: Sequence[str], chunk: Optional[str] = None) -> List[List[str]]:
    """Each grid point's overrides: the job's own (without `chunk`) followed by one point of the
    chunk's inner grid. `chunk` defaults to the job's `chunk=` override; no chunk: the job itself."""
    outer, found = [], None
    for text in overrides:
        if _key(text) == KEY:
            found = text
        else:
            outer.append(text)
    if chunk is None:
        chunk = _value(found) if found is not None else None
    if not chunk:
        return [list(overrides)]
    inner = inner_grid(chunk)
    both = {_key(text) for text in outer} & {_key(text) for point in inner for text in point}
    if both:
        raise UserError(f"{', '.join(sorted(both))} is set both by the job's overrides and by {KEY}={chunk!r}: "
                        f"set it in one place (a value swept inside the chunk, or outside it).")
    return [outer + point for point in inner]


def expand_jobs(jobs: Sequence[Sequence[str]]) -> List[List[str]]:
    """A sweep's jobs (each its overrides) with every chunked job replaced by its grid points: what
    the whole-sweep check and `plan=true` should look at."""
    return [point for job in jobs for point in grid_points(job)]


def point_folder(job_dir: Path, index: int) -> Path:
    """Where grid point `index` of the job in `job_dir` goes: the job's folder, then siblings."""
    job_dir = Path(job_dir)
    return job_dir if index == 0 else job_dir.with_name(f"{job_dir.name}-{index}")


# -- running a job -----------------------------------------------------------------------------------
def run_job(cfg: DictConfig, **run_options: Any) -> Any:
    """The body of lcm-run's task function: `runner.run.run(cfg, **run_options)`, or, when `chunk`
    is set, every grid point of the chunk (run_chunk)."""
    from runner.run import run

    chunk = cfg.get(KEY)
    if not chunk:
        return run(cfg, **run_options)
    hydra = HydraConfig.instance()
    if hydra.cfg is None or HydraConfig.get().mode != RunMode.MULTIRUN:
        raise UserError(f"{KEY}={chunk!r} groups grid points into one job of a -m sweep; add -m, or run the "
                        f"points as a sweep of their own (lcm-run -m {' '.join(_arguments(chunk))}).")
    hydra_cfg = HydraConfig.get()
    # As the sweeper batches jobs that differ only in seed or prompt, so does a chunk (same groups).
    batch_size = int(hydra_cfg.sweeper.get("batch_size") or 1)
    return run_chunk(cfg, str(chunk), Path(str(cfg.paths.output_dir)), override_strings(hydra_cfg.overrides.task),
                     hydra.cfg, batch_size=batch_size, **run_options)


def run_chunk(cfg: DictConfig, chunk: str, job_dir: Path, overrides: Sequence[str], master: DictConfig,
              batch_size: int = 1, **run_options: Any) -> List[Dict[str, Any]]:
    """Run each grid point of `chunk` into its own folder (point_folder) and return their run.json
    records. `overrides` are the job's (Hydra's task overrides), `master` a config holding the
    job's `hydra` node (to compose the points as Hydra does). Points that differ only in seed or
    prompt share one pipeline call, `batch_size` images at most (runner.sweep.batching), as in a sweep run
    in one process. A point that fails, or is invalid, is recorded as failed and the others still
    run; then a UserError says how many failed. `run_options` go to runner.run.run."""
    from runner.sweep import batching, expansion
    from runner.config.schema import job_identity
    from runner.config.job_plan import plan_job
    from runner.run import run

    points = grid_points(overrides, chunk)
    inners = inner_grid(chunk)
    runnable = []  # (number, folder, overrides, inner overrides, task config) of each valid point
    failed = 0
    for index, (point, inner, composed) in enumerate(zip(points, inners, expansion.compose_jobs(master, points))):
        folder = point_folder(job_dir, index).resolve()
        task = None
        try:
            try:
                if isinstance(composed, Exception):
                    raise composed
                task = composed.task
            except Exception as error:
                raise UserError(f"grid point {' '.join(point)} cannot be composed: {_first_line(error)}") from None
            point_cfg = _task_config(task, folder)
            plan_job(point_cfg)  # an invalid point is recorded as such, beside the others
        except UserError as error:
            failed += 1
            log.error("grid point %d/%d (%s) rejected (recorded in its run.json): %s", index + 1, len(points),
                      " ".join(inner), error)
            _record_rejected(folder, point, task, error)
            continue
        runnable.append((index, folder, point, inner, point_cfg))
    configs = [entry[-1] for entry in runnable]
    done: List[Dict[str, Any]] = []
    try:
        for group in batching.group(configs, range(len(configs)), max(1, batch_size)):
            batching.expect([configs[i] for i in group])
            for i in group:
                index, folder, point, inner, point_cfg = runnable[i]
                log.info("grid point %d/%d of this job (%s) -> %s", index + 1, len(points), " ".join(inner), folder)
                try:
                    done.append(run(point_cfg, folder, overrides=point, **run_options))
                except Exception as error:  # recorded in its run.json by run(); the next point still runs
                    failed += 1
                    log.error("grid point failed (recorded in its run.json): %s", error)
    finally:  # a batch cut short leaves nothing behind for the jobs that run after this one
        for point_cfg in configs:
            batching.members_led_by(job_identity(point_cfg))
            batching.take_ready(job_identity(point_cfg))
    if failed:
        raise UserError(f"{failed} of {len(points)} grid points of {KEY}={chunk!r} failed; their run.json "
                        "files say why.")
    return done


def _task_config(task: DictConfig, folder: Path) -> DictConfig:
    """The config the task function would get for this point (its composed task config), with no
    `chunk` and its own folder."""
    cfg = copy.deepcopy(task)
    with read_write(cfg), open_dict(cfg):
        if cfg.get(KEY):  # set by a config file rather than the command line: this point is one job
            cfg[KEY] = None
        cfg.paths.output_dir = str(folder)
    return cfg


def _record_rejected(folder: Path, overrides: List[str], task: Optional[DictConfig], error: Exception) -> None:
    """Say why a point left no images, as runner.run does for a rejected sweep job. A folder that
    holds anything already keeps it."""
    folder.mkdir(parents=True, exist_ok=True)
    if records.previous_job_outputs(folder):
        return
    record: Dict[str, Any] = {"status": "failed", "overrides": list(overrides),
                              "error": f"{type(error).__name__}: {error}"}
    if task is not None:
        try:  # the values are what was wrong, but they still place the point in the sweep's grid
            from runner.config.schema import to_container

            record["config"] = to_container(_task_config(task, folder))
        except Exception:
            pass
    records.write_json(folder / records.RUN_JSON, record)


def _arguments(chunk: str) -> List[str]:
    try:
        return shlex.split(str(chunk))
    except ValueError:
        return [str(chunk)]


def _key(text: str) -> str:
    return text.split("=", 1)[0].strip().lstrip("+~")


def _value(text: str) -> Optional[str]:
    """The value of a `chunk=...` override, unquoted as Hydra reads it."""
    try:
        (override,) = OverridesParser.create().parse_overrides([text])
    except HydraException as error:
        raise UserError(f"{text!r} is not an override Hydra reads: {_first_line(error)}") from None
    value = override.value()
    return None if value is None else str(value)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
