"""What a sweep hands, inside one process, from its up-front check and its sweeper to the jobs they
launch: one object, `HANDOFF`, with one `reset()` at the sweep's end.

- `composed`: the jobs' configs composed for the check (keyed by the master config object, which
  Hydra hands both the callback and the sweeper), so that the sweeper launches them without composing
  again;
- `plans`: the plan the check made for each job config object, for the job when it runs;
- `batches` and `ready`: jobs that differ only in seed or prompt and share one pipeline call
  (runner.sweep.batching): the members a leader's call makes, and the images it made for the others.

Jobs launched in other processes (joblib, submitit) find it empty and do everything themselves.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from omegaconf import DictConfig

from runner.config.job_plan import JobPlan, plan_job
from runner.config.schema import job_identity


class SweepHandoff:
    def __init__(self) -> None:
        self.composed: Dict[int, Tuple[List[List[str]], List[Any]]] = {}  # id(master) -> (jobs, composed)
        self.plans: Dict[int, Tuple[DictConfig, JobPlan, Optional[str]]] = {}  # id(job config) -> (config, plan, identity)
        self.batches: Dict[str, List[DictConfig]] = {}  # leader's job id -> the call's configs, in order
        self.ready: Dict[str, Any] = {}  # job id -> batching.Ready, made by its leader's call

    def remember_plan(self, cfg: DictConfig, plan: JobPlan, identity: Optional[str] = None) -> None:
        self.plans[id(cfg)] = (cfg, plan, identity)

    def plan_of(self, cfg: DictConfig) -> JobPlan:
        """plan_job(cfg), or the plan the check already made for this very config object."""
        kept = self.plans.get(id(cfg))
        if kept is not None and kept[0] is cfg:
            return kept[1]
        return plan_job(cfg)

    def identity_of(self, cfg: DictConfig) -> str:
        """job_identity(cfg), or the identity the check already computed for this very config object."""
        kept = self.plans.get(id(cfg))
        if kept is not None and kept[0] is cfg and kept[2] is not None:
            return kept[2]
        return job_identity(cfg)

    def reset(self) -> None:
        self.composed.clear()
        self.plans.clear()
        self.batches.clear()
        self.ready.clear()


HANDOFF = SweepHandoff()
