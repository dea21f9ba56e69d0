"""A sweep seen whole before it runs: its jobs, as Hydra's basic sweeper will expand them, each
composed and planned, and what running them would cost (`plan=true`, a dry run).

Torch-free: nothing loads and nothing is written.
"""
from __future__ import annotations

import contextlib
import copy
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, ValueType
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from runner.engine import state
from runner.sweep import interrupts
from runner.config.prompt_sets import rows_of_config
from runner.sweep.handoff import HANDOFF
from runner.sweep.startup import skipped_a_missing_group
from runner.errors import UserError
from runner.config.job_plan import JobPlan, plan_job
from runner.config import plan_memo
from runner.config.plain import Plain
from runner.config.schema import job_identity, override_strings
from runner.sweep.job_values import GroupValues


@dataclass
class PlannedJob:
    number: int
    overrides: List[str]
    plan: Optional[JobPlan] = None
    error: Optional[str] = None
    values: Optional[Plain] = None  # the job's config as resolved plain data, where it composed


GRID_SWEEPERS = ("BasicSweeper", "LcmSweeper")  # the sweepers that expand a grid the basic way


def expand(config: DictConfig) -> Tuple[Optional[List[List[str]]], List[str]]:
    """Every job's overrides and the swept keys, or (None, []) under another kind of sweeper."""
    if not str(config.hydra.sweeper.get("_target_", "")).endswith(GRID_SWEEPERS):
        return None, []
    if config.prompts.kind != "none" and not str(config.hydra.sweeper._target_).endswith("LcmSweeper"):
        raise UserError(f"prompts={config.prompts.kind} needs lcm-run's sweeper, which adds the axis of the set's "
                        "rows: drop hydra/sweeper=basic.")
    params = config.hydra.sweeper.get("params") or {}
    parser = OverridesParser.create()
    arguments = with_prompt_axis(config, override_strings(config.hydra.overrides.task))
    overrides = parser.parse_overrides(_arguments(params, arguments))
    swept = [o.get_key_element().lstrip("+~") for o in overrides if o.is_sweep_override()]
    return grid(params, arguments, parser), swept


def with_prompt_axis(config: DictConfig, arguments: Sequence[str]) -> List[str]:
    """The sweep's arguments and, with a prompt set (prompts=file|builtin), its rows as the axis
    `prompt`, unless the command line sets `prompt` itself."""
    arguments = list(arguments)
    if config.prompts.kind == "none" or any(a.split("=", 1)[0].lstrip("+~") == "prompt" for a in arguments):
        return arguments
    ids = [row.id for row in rows_of_config(config)]
    return [*arguments, "prompt=" + ",".join(_quoted(row_id) for row_id in ids)]


def _quoted(text: str) -> str:
    """`text` as a quoted string of Hydra's override grammar."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def grid(params, arguments, parser: OverridesParser) -> List[List[str]]:
    """The jobs' overrides, expanded exactly as Hydra's basic sweeper expands them."""
    overrides = parser.parse_overrides(_arguments(params, arguments))
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def _arguments(params, arguments) -> List[str]:
    return [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)


def cost_order(configs: Sequence[Union[DictConfig, Plain]]) -> List[int]:
    """Job indices ordered so that what is expensive to switch switches least: the base model, then
    the LoRA stack (files; weights too when fused), then the conditioning model; then jobs that may
    share one pipeline call (runner.sweep.batching) side by side, each such group where its first job is
    in the grid. Stable: the rest keeps the grid order."""
    from runner.sweep.batching import batch_key

    first_of_batch: Dict[str, int] = {}
    batches = [first_of_batch.setdefault(batch_key(cfg), index) for index, cfg in enumerate(configs)]

    def cost(index: int):
        cfg = configs[index]
        stack = tuple((name, entry.source, entry.weight_name) for name, entry in cfg.lora.items())
        fused = tuple(entry.weight for entry in cfg.lora.values()) if cfg.fuse_lora else ()
        cond = cfg.conditioning
        return (str(cfg.model.source), str(cfg.model.get("config")), str(cfg.model.variant), str(cfg.model.vae),
                str(cfg.device), stack,
                bool(cfg.fuse_lora), fused, str(cond.get("kind")), str(cond.get("model", "")), batches[index])
    return sorted(range(len(configs)), key=cost)


class ComposedGroup:
    """One composition of the defaults list, shared by every job that made the same config-group
    choices. Its `config` takes each job's values in turn (ComposedJob.applied), so that launching a
    job costs no deep copy of the ~1000-node config with its `hydra` node."""

    def __init__(self, config: DictConfig) -> None:
        self.config = config  # the job being launched's config, Hydra's node included
        self.pristine = copy.deepcopy(config)  # what config's top-level nodes return to after a job
        self.task = copy.deepcopy(config)  # each job's task config starts from this: no `hydra` node
        with read_write(self.task), open_dict(self.task):
            del self.task["hydra"]
        # HydraConfig's view, as Hydra's HydraConfig.set_config makes it (its parent: the whole config)
        OmegaConf.set_readonly(config.hydra, True)
        self.hydra = OmegaConf.masked_copy(config, "hydra")
        self.hydra.hydra._set_parent(config)
        self._values: Optional[GroupValues] = None

    @property
    def values(self) -> GroupValues:
        """Its jobs' values as plain data (runner.sweep.job_values), made on first use."""
        if self._values is None:
            self._values = GroupValues(self.task)
        return self._values


@dataclass
class ComposedJob:
    """A job of a sweep: its group's composition and its own value overrides. Planning reads its
    values as plain data (`resolved`); the task function gets `task`, a copy of the group's task
    config (the config without its `hydra` node) with the overrides applied, made when it launches."""
    overrides: List[str]
    values: List[Override]
    group: ComposedGroup
    override_dirname: str
    plan: Optional[JobPlan] = None  # made by the sweep's check (plan_jobs)
    identity: Optional[str] = None
    _task: Optional[DictConfig] = None
    _resolved: Optional[Plain] = None

    @property
    def resolved(self) -> Plain:
        """The job's config as resolved plain data."""
        if self._resolved is None:
            self._resolved = self.group.values.of(self.values)
        return self._resolved

    @property
    def task(self) -> DictConfig:
        """The job's task config, as Hydra composes it; the plan made for it goes with it."""
        if self._task is None:
            task = copy.deepcopy(self.group.task)
            ConfigLoaderImpl._apply_overrides_to_config(self.values, task)
            self._task = task
            if self.plan is not None:
                HANDOFF.remember_plan(task, self.plan, self.identity)
        return self._task

    @contextlib.contextmanager
    def applied(self, number: int) -> Iterator[DictConfig]:
        """The group's config as Hydra composes this job, numbered `number`; put back after."""
        config, views = self.group.config, (self.group.config.hydra, self.group.hydra.hydra)
        touched = {o.key_or_group.split(".")[0] for o in self.values}
        try:  # changes to the shared config are made whole, Ctrl-C or not (runner.sweep.interrupts)
            with interrupts.held(), read_write(config), open_dict(config):
                ConfigLoaderImpl._apply_overrides_to_config(self.values, config)
                for hydra in views:  # what Hydra derives from the job's own override list
                    with read_write(hydra), open_dict(hydra):
                        hydra.overrides.task = list(self.overrides)
                        hydra.job.override_dirname = self.override_dirname
                        hydra.job.id = number
                        hydra.job.num = number
            yield config
        finally:
            with interrupts.held(), read_write(config), open_dict(config):
                for key in touched:
                    if key in self.group.pristine:
                        config[key] = self.group.pristine[key]
                    elif key in config:
                        del config[key]


def compose_jobs(config: DictConfig, jobs: Sequence[List[str]]) -> Iterator[Union[ComposedJob, Exception]]:
    """Each job, as Hydra composes it, but composed once per distinct set of config-group choices:
    Hydra itself composes the defaults list first, then applies the plain value overrides
    (`sampling.steps=4`) to the result, and so does this, to a copy of the task config (ms instead
    of ~0.1 s). Jobs making the command line's own choices (a sweep over values) start from a copy
    of the master config, which Hydra composed already: not composed at all."""
    loader = GlobalHydra.instance().config_loader()
    parser = OverridesParser.create()
    groups: Dict[Tuple[str, ...], Union[ComposedGroup, Exception]] = {}
    master = _master_overrides(loader, parser, config)
    parse = OverrideParsing(parser)
    is_value_key: Dict[Tuple[str, bool], bool] = {}
    namings: Dict[int, DictConfig] = {}  # hydra.job.config.override_dirname of each group
    for overrides in jobs:
        try:
            parsed = parse(overrides)
            is_value = [_cached(is_value_key, (o.input_line if o.is_sweep_override() else o.key_or_group,
                                               isinstance(o.value(), dict)), lambda: _is_value_override(loader, o))
                        for o in parsed]
            values = [o for o, value in zip(parsed, is_value) if value]
            group_overrides = [o for o, value in zip(parsed, is_value) if not value]
            choices = tuple(o.input_line for o in group_overrides)
            if choices not in groups:
                groups[choices] = (ComposedGroup(_copy_of_master(config)) if _is_masters(master, group_overrides, values)
                                   else _compose(loader, config, list(choices)))
            group = groups[choices]
            if isinstance(group, Exception):
                raise group
            naming = _cached(namings, id(group), lambda: group.config.hydra.job.config.override_dirname)
            dirname = get_overrides_dirname(overrides=parsed, kv_sep=naming.kv_sep, item_sep=naming.item_sep,
                                            exclude_keys=naming.exclude_keys)
            yield ComposedJob(list(overrides), values, group, dirname)
        except Exception as error:  # a bad job is reported with the others, not raised
            yield error


class OverrideParsing:
    """Hydra's override parser, each distinct override parsed once. `key=<integer>`, the form of a
    seed axis of 10,000 values, is built directly as the parser builds it (its ANTLR parse costs
    ~1 ms); tests/test_sweep_plan.py checks the two agree."""

    _KEY_EQUALS_INT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)=(0|-?[1-9][0-9]*)$")

    def __init__(self, parser: OverridesParser) -> None:
        self.parser = parser
        self.parsed: Dict[str, Override] = {}

    def __call__(self, overrides: Sequence[str]) -> List[Override]:
        return [self.parsed[text] if text in self.parsed else self._parse(text) for text in overrides]

    def _parse(self, text: str) -> Override:
        match = self._KEY_EQUALS_INT.match(text)
        if match:
            override = Override(type=OverrideType.CHANGE, key_or_group=match.group(1), value_type=ValueType.ELEMENT,
                                _value=int(match.group(2)), input_line=text)
        else:
            override = self.parser.parse_overrides([text])[0]
        self.parsed[text] = override
        return override


def _cached(memo: Dict[Any, Any], key: Any, compute: Any) -> Any:
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def _is_value_override(loader, override: Override) -> bool:
    """Hydra's own split (defaults_list.Overrides): not a config group, or a dict value."""
    if override.is_sweep_override() or override.get_key_element().startswith("hydra"):
        return False
    return isinstance(override.value(), dict) or not loader.repository.group_exists(override.key_or_group)


def _master_overrides(loader, parser: OverridesParser, config: DictConfig
                      ) -> Optional[Tuple[Tuple[str, ...], Set[str]]]:
    """The config-group choices and the plain values of the command line, when a job making exactly
    these choices and applying these values (and others) composes to the sweep's master config
    (Hydra's per-job nodes aside): Hydra composed the master from the same defaults list, skipping
    the sweeps, with these values applied, which the job applies again to the same effect. Not so,
    and None: a value added (`+`) or deleted (`~`), which cannot be applied twice, or a group default
    left `???`, which the master skips and a job's composition refuses."""
    if skipped_a_missing_group(config):
        return None
    fixed = [o for o in parser.parse_overrides(override_strings(config.hydra.overrides.task)) if not o.is_sweep_override()]
    values = [o for o in fixed if _is_value_override(loader, o)]
    if any(o.is_add() or o.is_delete() for o in values):
        return None
    return tuple(_canonical(o) for o in fixed if o not in values), {_canonical(o) for o in values}


def _is_masters(master: Optional[Tuple[Tuple[str, ...], Set[str]]], group_overrides: List[Override],
                values: List[Override]) -> bool:
    """Whether a job composes to the master config: its choices, and the master's values among its own."""
    return (master is not None and master[0] == tuple(_canonical(o) for o in group_overrides)
            and master[1] <= {_canonical(o) for o in values})


def _canonical(override: Override) -> str:
    """An override as the basic sweeper writes it into each job's list (`a={x: 1}` becomes `a={x:1}`)."""
    return f"{override.get_key_element()}={override.get_value_element_as_str()}"


def _copy_of_master(config: DictConfig) -> DictConfig:
    """The master config as a job's composition starts: flags as the loader leaves them."""
    copied = copy.deepcopy(config)  # with the resolver cache: ${now:} as in the master (load_sweep_config)
    OmegaConf.set_struct(copied, True)
    OmegaConf.set_readonly(copied.hydra, False)
    return copied


def _compose(loader, config: DictConfig, overrides: List[str]) -> Union[ComposedGroup, Exception]:
    try:
        return ComposedGroup(loader.load_sweep_config(config, overrides))
    except Exception as error:
        return error


def take_composed(config: DictConfig, jobs: Sequence[List[str]]) -> List[Union[ComposedJob, Exception]]:
    """The jobs' configs: those the check composed, if it checked exactly these jobs, else fresh."""
    kept = HANDOFF.composed.pop(id(config), None)
    if kept is not None and kept[0] == [list(job) for job in jobs]:
        return kept[1]
    return list(compose_jobs(config, jobs))


def plan_jobs(config: DictConfig, jobs: Sequence[List[str]]) -> List[PlannedJob]:
    """Compose and plan every job; a bad job carries its error instead of stopping the others."""
    planned = []
    composed = list(compose_jobs(config, jobs))
    HANDOFF.composed[id(config)] = ([list(job) for job in jobs], composed)  # composed once, used twice
    with plan_memo.shared():
        for number, (overrides, composed_job) in enumerate(zip(jobs, composed)):
            job = PlannedJob(number, list(overrides))
            try:
                if isinstance(composed_job, Exception):
                    raise composed_job
                job.values = composed_job.resolved
                job.plan = composed_job.plan = plan_job(job.values)  # for the job when it runs
                composed_job.identity = job_identity(job.values)
            except Exception as error:  # composition errors and UserErrors alike: reported together
                job.error = _first_paragraph(error)
            planned.append(job)
    return planned


def _first_paragraph(error: Exception) -> str:
    text = str(error).strip()
    cause = error.__cause__
    if cause is not None and str(cause).strip():  # Hydra's errors say where; their cause says what
        text = f"{text} ({str(cause).strip().splitlines()[0]})"
    return text.splitlines()[0] if text else type(error).__name__


def describe(planned: Sequence[PlannedJob], sweep_dir: Path, cost_ordered: bool = False) -> str:
    """What running the sweep would do, in the order it would do it: the grid's, or `cost_ordered`
    as lcm-run's sweeper runs it (which decides how often each model loads)."""
    valid = [job for job in planned if job.plan is not None]
    if cost_ordered:
        valid = [valid[index] for index in cost_order([job.values for job in valid])]
    good = [job.plan for job in valid]
    images = sum(len(plan.seeds) for plan in good)
    steps = sum(len(plan.seeds) * plan.call["num_inference_steps"] for plan in good)
    lines = [f"Plan: {_count(len(planned), 'job')}, {_count(images, 'image')}, "
             f"{_count(steps, 'denoising step')}, into {sweep_dir}"]
    family = {_base_key(plan)[1]: plan.family.label for plan in good}
    lines += [f"  base {ref}: loaded {n}x ({family[ref]})" for ref, n in _loads(good, _base_key, state.MAX_PIPELINES)]
    lines += [f"  {ref}: loaded {n}x" for ref, n in _loads(good, _conditioning_key, state.MAX_COMPONENTS)]
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
    vae = "" if plan.vae is None else f" with VAE {plan.vae.ref}"
    return ((plan.base.path, plan.config and plan.config.path, plan.variant, plan.vae and plan.vae.path, plan.device,
             plan.dtype),
            f"{plan.base.ref} ({plan.base.path}){vae}")


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
        planned = [PlannedJob(0, override_strings(config.hydra.overrides.task), plan_job(config))]
    except UserError as error:
        planned = [PlannedJob(0, override_strings(config.hydra.overrides.task), error=str(error))]
    return describe(planned, Path(str(config.hydra.run.dir)).resolve())
