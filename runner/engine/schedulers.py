"""Schedulers swapped the diffusers way: `from_config` of the model's own scheduler config."""
from __future__ import annotations

import inspect
from typing import Any, Dict

from hydra.utils import instantiate

from runner.errors import UserError
from runner.engine.models import quiet_libraries


def build_scheduler(spec: Dict[str, Any], model_scheduler_config: Any) -> Any:
    """`spec` is the `scheduler` config node: a partial `X.from_config` plus keyword overrides."""
    overrides = {k: v for k, v in spec.items() if not k.startswith("_")}
    factory = instantiate(spec)
    scheduler_class = factory.func.__self__
    accepted = set(inspect.signature(scheduler_class.__init__).parameters) - {"self"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise UserError(
            f"scheduler.{unknown[0]}={overrides[unknown[0]]!r} is not an option of "
            f"{scheduler_class.__name__} (it accepts: {', '.join(sorted(accepted))}). "
            f"Remove it with ~scheduler.{unknown[0]} or fix its name."
        )
    with quiet_libraries():  # the model's config may hold keys this scheduler does not use
        return factory(model_scheduler_config)


def scheduler_for(loaded: Any, spec: Dict[str, Any]) -> Any:
    """The job's scheduler on a cached pipeline (runner.engine.state.LoadedPipeline): the one the last job
    used when the spec is the same, as a hand-written loop keeps one scheduler for every call (each
    call starts with `set_timesteps`, which resets its state); else a new one."""
    key = repr(sorted(spec.items()))
    if loaded.scheduler is None or loaded.scheduler[0] != key:
        loaded.scheduler = (key, build_scheduler(spec, loaded.scheduler_config))
    return loaded.scheduler[1]


def describe(scheduler: Any) -> Dict[str, Any]:
    return {"class": type(scheduler).__name__, "config": dict(scheduler.config)}
