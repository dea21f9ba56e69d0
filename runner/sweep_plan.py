"""A sweep seen whole before it runs: its jobs, as Hydra's basic sweeper will expand them, each
composed and planned, and what running them would cost (`plan=true`, a dry run).

Torch-free: nothing loads and nothing is written.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from runner import cache
from runner.errors import UserError
from runner.plan import JobPlan, plan_job


@dataclass
class PlannedJob:
    number: int
    overrides: List[str]
    plan: Optional[JobPlan] = None
    error: Optional[str] = None


def expand(config: DictConfig) -> Tuple[Optional[List[List[str]]], List[str]]:
    """Every job's overrides and the swept keys, or (None, []) under another sweeper."""
    if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None, []
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(arguments)
    jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    swept = [o.get_key_element().lstrip("+~") for o in overrides if o.is_sweep_override()]
    return jobs, swept


def plan_jobs(config: DictConfig, jobs: Sequence[List[str]]) -> List[PlannedJob]:
    """Compose each job as the launcher will, and plan it; a bad job carries its error."""
    loader = GlobalHydra.instance().config_loader()
    planned = []
    for number, overrides in enumerate(jobs):
        job = PlannedJob(number, list(overrides))
        try:
            job.plan = plan_job(loader.load_sweep_config(config, list(overrides)))
        except Exception as error:  # composition errors and UserErrors alike: reported together
            job.error = str(error).splitlines()[0] if str(error) else type(error).__name__
        planned.append(job)
    return planned


def describe(planned: Sequence[PlannedJob], sweep_dir: Path) -> str:
    """What running the sweep would do, in the order it would do it."""
    good = [job.plan for job in planned if job.plan is not None]
    images = sum(len(plan.seeds) for plan in good)
    steps = sum(len(plan.seeds) * plan.call["num_inference_steps"] for plan in good)
    lines = [f"Plan: {_count(len(planned), 'job')}, {_count(images, 'image')}, "
             f"{_count(steps, 'denoising step')}, into {sweep_dir}"]
    lines += [f"  base {ref}: loaded {n}x" for ref, n in _loads(good, _base_key, cache.MAX_PIPELINES)]
    lines += [f"  {ref}: loaded {n}x" for ref, n in _loads(good, _conditioning_key, cache.MAX_COMPONENTS)]
    lines += [f"  LoRA {ref}: loaded {n}x" for ref, n in _lora_loads(good)]
    bad = [job for job in planned if job.error]
    if bad:
        lines.append(f"{_count(len(bad), 'job')} would fail:")
        lines += [f"  job {job.number} ({' '.join(o for o in job.overrides if not o.startswith('plan='))}): "
                  f"{job.error}" for job in bad]
    lines.append("Nothing was loaded or written (plan=true); drop plan=true to run.")
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _base_key(plan: JobPlan):
    return (plan.base.path, plan.variant, plan.device, plan.dtype), f"{plan.base.ref} ({plan.base.path})"


def _conditioning_key(plan: JobPlan):
    cond = plan.conditioning
    if cond.model is None:
        return None, None
    return (cond.model.path, cond.model_variant), f"{cond.component} {cond.model.ref} ({cond.model.path})"


def _loads(plans, key_of, capacity: int):
    """How often each model loads, following the process cache's last-used eviction."""
    kept: "OrderedDict" = OrderedDict()
    counts: "OrderedDict[str, int]" = OrderedDict()
    for plan in plans:
        key, label = key_of(plan)
        if key is None:
            continue
        if key in kept:
            kept.move_to_end(key)
            continue
        if len(kept) >= capacity:
            kept.popitem(last=False)
        kept[key] = True
        counts[label] = counts.get(label, 0) + 1
    return counts.items()


def _lora_loads(plans):
    """Each LoRA file loads once per load of the base it goes into."""
    counts: "OrderedDict[str, int]" = OrderedDict()
    loaded, current_base = set(), None
    for plan in plans:
        base, _ = _base_key(plan)
        if base != current_base:
            loaded, current_base = set(), base
        for adapter in plan.adapters:
            if (adapter.name, adapter.source.file) not in loaded:
                loaded.add((adapter.name, adapter.source.file))
                label = f"{adapter.name} {adapter.source.file}"
                counts[label] = counts.get(label, 0) + 1
    return counts.items()


def check_single(config: DictConfig) -> str:
    """The plan of a single run (RUN mode)."""
    try:
        planned = [PlannedJob(0, list(config.hydra.overrides.task), plan_job(config))]
    except UserError as error:
        planned = [PlannedJob(0, list(config.hydra.overrides.task), error=str(error))]
    return describe(planned, Path(str(config.hydra.run.dir)).resolve())
