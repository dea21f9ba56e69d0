"""Hydra's `run_job` for a job composed once for its whole group (runner.sweep.expansion.ComposedJob).

Hydra's own `run_job` deep-copies the job's ~1000-node config three times (the task's copy, the
HydraConfig copy twice) and writes `.hydra/` with PyYAML's pure-Python emitter: 30-45 ms a job on
this project's config, before the task starts. This takes the same steps in the same order — the
job's folder, `hydra.runtime.output_dir`, HydraConfig, working directory, job logging, the three
`.hydra/*.yaml` files, `hydra.job.env_set`, the callbacks, the JobReturn — with the group's config
holding the job's values in place of a copy (ComposedJob.applied), the task config the sweep already
composed and planned, and YAML written by libyaml where the bytes are the same (runner.sweep.fast_yaml).

One difference, by design: `JobReturn.hydra_cfg` is read back from the job's `.hydra/hydra.yaml`
when something asks for it, rather than copied for every job.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobRuntime, JobStatus, _flush_loggers, configure_log, env_override
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from runner.sweep import fast_yaml, interrupts
from runner.sweep.expansion import ComposedJob


class LeanJobReturn(JobReturn):
    """Hydra's JobReturn, whose hydra_cfg is loaded from the job's hydra.yaml on first use."""

    hydra_yaml: Optional[Path] = None

    @property  # type: ignore[override]
    def hydra_cfg(self) -> Optional[DictConfig]:
        if self.__dict__.get("_hydra_cfg") is None and self.hydra_yaml is not None and self.hydra_yaml.is_file():
            self.__dict__["_hydra_cfg"] = OmegaConf.load(self.hydra_yaml)
        return self.__dict__.get("_hydra_cfg")

    @hydra_cfg.setter
    def hydra_cfg(self, value: Optional[DictConfig]) -> None:
        self.__dict__["_hydra_cfg"] = value


def run_job(hydra_context: HydraContext, task_function: TaskFunction, job: ComposedJob, number: int,
            job_dir_key: str = "hydra.sweep.dir", job_subdir_key: str = "hydra.sweep.subdir") -> JobReturn:
    """hydra.core.utils.run_job(task_function, <job's config numbered `number`>, job_dir_key,
    job_subdir_key, hydra_context): the same folder, files, logging and callbacks."""
    callbacks = hydra_context.callbacks
    old_cwd = os.getcwd()
    orig_hydra_cfg = HydraConfig.instance().cfg
    chdir = False
    with job.applied(number) as config:
        HydraConfig.instance().cfg = job.group.hydra  # what set_config would make, kept per group
        output_dir = os.path.join(str(OmegaConf.select(config, job_dir_key)),
                                  str(OmegaConf.select(config, job_subdir_key)))
        with interrupts.held():
            for hydra in (config.hydra, job.group.hydra.hydra):
                with read_write(hydra.runtime), open_dict(hydra.runtime):
                    hydra.runtime.output_dir = os.path.abspath(output_dir)
        try:
            ret = LeanJobReturn()
            ret.cfg = job.task
            ret.overrides = list(job.overrides)
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            chdir = _chdir(config)
            if chdir:
                os.chdir(output_dir)
                ret.working_dir = output_dir
            else:
                ret.working_dir = os.getcwd()
            JOB_LOGGING.configure(config)
            if config.hydra.output_subdir is not None:
                hydra_output = Path(config.hydra.runtime.output_dir) / Path(config.hydra.output_subdir)
                _save(job.task, hydra_output / "config.yaml")
                ret.hydra_yaml = _save(job.group.hydra, hydra_output / "hydra.yaml")
                _save(config.hydra.overrides.task, hydra_output / "overrides.yaml")
            with env_override(config.hydra.job.env_set):
                callbacks.on_job_start(config=config, task_function=task_function)
                try:
                    ret.return_value = task_function(job.task)
                    ret.status = JobStatus.COMPLETED
                except Exception as error:
                    ret.return_value = error
                    ret.status = JobStatus.FAILED
            ret.task_name = JobRuntime.instance().get("name")
            _flush_loggers()
            callbacks.on_job_end(config=config, job_return=ret)
            return ret
        finally:
            HydraConfig.instance().cfg = orig_hydra_cfg
            if chdir:
                os.chdir(old_cwd)


class JobLogging:
    """Hydra's `configure_log(hydra.job_logging, hydra.verbose)` for each job. Jobs whose logging
    differs only in its files' names (`${hydra.runtime.output_dir}/lcm-run.log`) keep the handlers
    the first one set up and point its file handlers at their own files: logging's dictConfig,
    ~2 ms a job, runs once per sweep. Anything else, or handlers changed since, sets up anew."""

    def __init__(self) -> None:
        self.shape: Optional[str] = None
        self.handlers: List[logging.Handler] = []

    def configure(self, config: DictConfig) -> None:
        wanted = OmegaConf.to_container(config.hydra.job_logging, resolve=True)
        files = _root_files(wanted)
        shape = json.dumps([_without_files(wanted), OmegaConf.to_container(config.hydra.verbose)
                            if OmegaConf.is_config(config.hydra.verbose) else config.hydra.verbose],
                           sort_keys=True, default=str)
        root = logging.getLogger()
        if files is not None and shape == self.shape and root.handlers == self.handlers:
            for handler, file in zip(root.handlers, files):
                if file is not None and os.path.abspath(file) != handler.baseFilename:
                    handler.close()
                    handler.baseFilename = os.path.abspath(file)
                    if not handler.delay:
                        handler.stream = handler._open()
            return
        configure_log(config.hydra.job_logging, config.hydra.verbose)
        self.shape, self.handlers = (shape, list(root.handlers)) if files is not None else (None, [])


def _root_files(conf: Dict[str, Any]) -> Optional[List[Optional[str]]]:
    """The file of each of the root logger's handlers, in order (None: not a file); None when a
    handler that writes a file is not the root's, or a root handler is not a plain FileHandler."""
    handlers = conf.get("handlers") or {}
    root = list((conf.get("root") or {}).get("handlers") or [])
    for name, spec in handlers.items():
        if "filename" in spec and (name not in root or spec.get("class") != "logging.FileHandler"):
            return None
    return [handlers.get(name, {}).get("filename") for name in root]


def _without_files(conf: Dict[str, Any]) -> Dict[str, Any]:
    handlers = {name: {k: v for k, v in spec.items() if k != "filename"}
                for name, spec in (conf.get("handlers") or {}).items()}
    return {**conf, "handlers": handlers}


JOB_LOGGING = JobLogging()


def _chdir(config: DictConfig) -> bool:
    """hydra.job.chdir, with Hydra's default for version_base 1.2 and later (this app's)."""
    chdir = config.hydra.job.chdir
    return False if chdir is None else bool(chdir)


def _save(cfg: Any, path: Path) -> Path:
    """hydra.core.utils._save_config."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        file.write(fast_yaml.to_yaml(cfg))
    return path

