"""Hydra's start, composed once instead of twice.

Before a run or a multirun, `hydra.main` composes the whole config only to read `hydra.mode` from
it (`Hydra.get_mode`: multirun mode, validation off) and throws it away; `Hydra.run` or
`Hydra.multirun` then composes the same config again, with `hydra.mode=RUN` or `hydra.mode=MULTIRUN`
appended to the overrides when the config does not already say so (~0.1 s each here). Inside
`composed_once()`, the second composition is the first one's config, validated as Hydra validates
it, with that one appended override applied and recorded the way Hydra's loader applies and records
it. Two things make a run's composition differ from the probe's, and then Hydra composes again: a
config-group default left missing (`???`, which the probe skips and a run refuses) and any other
override list. tests/test_hydra_start.py holds the result to Hydra's own composition.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, List, Optional

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

# what hydra's _run_app appends after the probe, when the config names no mode (or RUN under -m)
MODE_OVERRIDES = {RunMode.MULTIRUN: "hydra.mode=MULTIRUN", RunMode.RUN: "hydra.mode=RUN"}


class _Probe:
    """The config Hydra composed to read hydra.mode, and the request it answered."""

    def __init__(self, loader: ConfigLoaderImpl, config_name: Optional[str], overrides: List[str],
                 from_shell: bool, config: DictConfig) -> None:
        self.loader, self.config_name, self.overrides = loader, config_name, list(overrides)
        self.from_shell, self.config = from_shell, config

    def extra_for(self, loader: Any, config_name: Optional[str], overrides: List[str], run_mode: RunMode,
                  from_shell: bool) -> Optional[List[str]]:
        """The overrides to add to the probe's config to answer this request, or None if it cannot."""
        if (loader is not self.loader or config_name != self.config_name or run_mode not in MODE_OVERRIDES
                or from_shell != self.from_shell or overrides[:len(self.overrides)] != self.overrides):
            return None
        if run_mode == RunMode.RUN and skipped_a_missing_group(self.config):
            return None  # the run must fail as Hydra's does: "You must specify ..."
        extra = overrides[len(self.overrides):]
        return extra if extra in ([], [MODE_OVERRIDES[run_mode]]) else None


def skipped_a_missing_group(config: DictConfig) -> bool:
    """Whether a multirun-mode composition skipped a config-group default left `???` (Hydra records
    its choice as missing), which a run's or a sweep job's composition refuses."""
    choices = config.hydra.runtime.choices
    return any(OmegaConf.is_missing(choices, group) for group in choices)


@contextlib.contextmanager
def composed_once() -> Iterator[None]:
    """Within: Hydra's mode probe and the run's or multirun's composition are one composition."""
    original = ConfigLoaderImpl.load_configuration
    probes: List[_Probe] = []

    def load_configuration(self: ConfigLoaderImpl, config_name: Optional[str], overrides: List[str],
                           run_mode: RunMode, from_shell: bool = True,
                           validate_sweep_overrides: bool = True) -> DictConfig:
        probe = probes.pop() if probes else None
        if run_mode == RunMode.MULTIRUN and not validate_sweep_overrides:  # Hydra.get_mode's probe
            config = original(self, config_name, overrides, run_mode, from_shell, validate_sweep_overrides)
            probes.append(_Probe(self, config_name, overrides, from_shell, config))
            return config
        extra = probe.extra_for(self, config_name, list(overrides), run_mode, from_shell) if probe else None
        if extra is None:
            return original(self, config_name, overrides, run_mode, from_shell, validate_sweep_overrides)
        return _completed(probe, list(overrides), extra, run_mode, validate_sweep_overrides)

    ConfigLoaderImpl.load_configuration = load_configuration  # type: ignore[method-assign]
    try:
        yield
    finally:
        ConfigLoaderImpl.load_configuration = original  # type: ignore[method-assign]


def _completed(probe: _Probe, overrides: List[str], extra: List[str], run_mode: RunMode,
               validate: bool) -> DictConfig:
    """What Hydra's loader would compose for `overrides`: the probe's config plus `extra`, which are
    hydra overrides of plain values (they change no defaults list, hence no composition)."""
    parser = OverridesParser.create()
    if validate:
        ConfigLoaderImpl.validate_sweep_overrides_legal(parser.parse_overrides(overrides), run_mode,
                                                        probe.from_shell)
    config = probe.config
    parsed = parser.parse_overrides(extra)
    try:
        ConfigLoaderImpl._apply_overrides_to_config(parsed, config)
    except OmegaConfBaseException as error:  # as Hydra's load_configuration reports it
        raise ConfigCompositionException() from error
    for override in parsed:  # recorded after the others, as the loader records them in order
        config.hydra.overrides.hydra.append(override.input_line)
    return config
