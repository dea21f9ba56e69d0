"""A job's config as plain resolved data, read like a DictConfig (`cfg.sampling.steps`).

Planning reads a few hundred values per job. Read through OmegaConf, each read walks nodes and
re-parses interpolations with its grammar, ~10 ms a job; read from plain dicts, microseconds. So
planning converts a config once (`as_plain`), or a sweep builds each job's plain values directly
from its group's (runner.sweep.job_values), and every check reads `Plain` data.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable

from omegaconf import DictConfig, OmegaConf

UNRESOLVED = ("paths",)  # `${hydra:...}` values, meaningful only inside the job Hydra runs
SKIPPED = ("hydra",)  # Hydra's own node, present when a single run's callback plans


class Plain(dict):
    """A mapping of plain config values whose keys read as attributes too; nested mappings are Plain."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def plain(data: Any) -> Any:
    """`data` (dicts, lists, scalars) with every dict a Plain."""
    if isinstance(data, dict):
        return Plain((key, plain(value)) for key, value in data.items())
    if isinstance(data, list):
        return [plain(value) for value in data]
    return data


def as_plain(cfg: Any) -> Plain:
    """The config's values, resolved, as Plain data (a Plain is returned as it is).

    A prompt field that cannot be filled in is reported as schema.check_prompt_fields words it."""
    if isinstance(cfg, Plain):
        return cfg
    from runner.config.schema import check_prompt_fields  # schema imports this module

    check_prompt_fields(cfg)
    return Plain((key, plain(_value(cfg, key))) for key in cfg if key not in SKIPPED)


def _value(cfg: DictConfig, key: str) -> Any:
    node = cfg._get_node(key)
    if not OmegaConf.is_config(node):
        return cfg[key]
    return OmegaConf.to_container(node, resolve=key not in UNRESOLVED)


def to_builtin(data: Any) -> Any:
    """Plain data as builtin dicts and lists (for JSON and for code that must not see Plain)."""
    if isinstance(data, dict):
        return {key: to_builtin(value) for key, value in data.items()}
    if isinstance(data, list):
        return [to_builtin(value) for value in data]
    return data


def without(data: Dict[str, Any], keys: Iterable[str]) -> Dict[str, Any]:
    return {key: value for key, value in data.items() if key not in keys}
