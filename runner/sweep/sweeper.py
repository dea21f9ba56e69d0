"""lcm-runner's sweeper: Hydra's basic sweeper, without its per-job composing cost, in switching-cost order.

Hydra's basic sweeper composes every job's config twice (once to validate the batch, once in the
launcher), ~0.16 s each: on a GPU, where a 4-step image takes a few tenths of a second, that doubles
a sweep. This sweeper expands the grid exactly as the basic one does (same grammar, same
`hydra.sweeper.params`), composes once per distinct set of config-group choices and applies the value
overrides by merging (runner.sweep.expansion.compose_jobs, tested equal to Hydra's own compose), and, with
Hydra's basic launcher, runs each job through a lean copy of Hydra's `run_job` (runner.sweep.launch: same
folders, same `.hydra/` files, same callbacks, without a deep copy of the config per job;
`launch: hydra` uses Hydra's own) in the order that switches models least: base model, then LoRA
stack, then conditioning, then cheap knobs. Job numbers keep the grid's order. Any other launcher
(joblib, submitit...) gets the jobs' overrides, as from the basic sweeper.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class LcmSweeper(Sweeper):
    def __init__(self, params: Optional[Dict[str, str]] = None, order: str = "cost", batch_size: int = 8,
                 launch: str = "lean") -> None:
        if order not in ("cost", "grid"):
            raise ValueError(f"hydra.sweeper.order={order!r} is not one of cost, grid")
        if launch not in ("lean", "hydra"):
            raise ValueError(f"hydra.sweeper.launch={launch!r} is not one of lean, hydra")
        if batch_size < 1:
            raise ValueError(f"hydra.sweeper.batch_size={batch_size} must be at least 1")
        self.params = params or {}
        self.order = order
        self.batch_size = batch_size
        self.launch = launch
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.launcher = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> List[Sequence[JobReturn]]:
        from runner.sweep import batching, expansion  # the runner's planning code, torch-free
        from runner.sweep.handoff import HANDOFF

        assert self.config is not None and self.hydra_context is not None
        arguments = expansion.with_prompt_axis(self.config, arguments)
        jobs = expansion.grid(self.params, arguments, OverridesParser.create(config_loader=self.hydra_context.config_loader))
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        if not isinstance(self.launcher, BasicLauncher):
            if type(self.launcher).__name__ == "SlurmLauncher":  # Hydra's submitit plugin
                from runner.sweep import slurm_states

                slurm_states.install()  # clusters without sacct: states from squeue
                with slurm_states.stopped_tasks_explained(sweep_dir):
                    results = self.launcher.launch(jobs, initial_job_idx=0)
            else:
                results = self.launcher.launch(jobs, initial_job_idx=0)
        else:
            results = self._launch_composed(jobs, expansion, batching)
        HANDOFF.reset()  # what the check and the launch kept for these jobs
        for result in results:
            _ = result.return_value  # as the basic sweeper: a failed job's exception surfaces here
        return [results]

    def _launch_composed(self, jobs: List[List[str]], expansion: Any, batching: Any) -> List[JobReturn]:
        """BasicLauncher.launch, fed configs composed once per group choice, in cost order, jobs that
        differ only in seed or prompt grouped to share a pipeline call (up to batch_size images)."""
        from runner.sweep import launch

        setup_globals()
        composed = expansion.take_composed(self.config, jobs)
        for job in composed:
            if isinstance(job, Exception):
                raise job
        configs = [job.resolved for job in composed]  # plain data: ordering reads hundreds of values a job
        order = expansion.cost_order(configs) if self.order == "cost" else list(range(len(jobs)))
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        log.info(f"Launching {len(jobs)} jobs locally ({self.order} order)")
        results: Dict[int, JobReturn] = {}
        for group in batching.group(configs, order, self.batch_size):
            batching.expect([composed[idx].task for idx in group])  # jobs that differ only in seed or prompt
            for idx in group:
                if log.isEnabledFor(logging.DEBUG):  # Hydra's line for each job, in Hydra's logging (~1 ms to set up)
                    configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
                    log.debug(f"\t#{idx} : {' '.join(filter_overrides(jobs[idx]))}")
                results[idx] = self._run_job(composed[idx], idx, launch)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [results[idx] for idx in range(len(jobs))]

    def _run_job(self, job: Any, idx: int, launch: Any) -> JobReturn:
        """launch=lean: runner.sweep.launch.run_job; launch=hydra: Hydra's own run_job, on a copy of the
        job's config (as the basic launcher, for callbacks that keep config objects across jobs)."""
        if self.launch == "lean":
            return launch.run_job(self.hydra_context, self.task_function, job, idx)
        with job.applied(idx) as config:
            config = copy.deepcopy(config)
        return run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=config,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
