"""Each job of a sweep as plain resolved values (runner.config.plain), made from its group's in
microseconds rather than by copying and resolving a DictConfig per job (~10 ms).

Jobs of one group (the same config-group choices) differ only by their value overrides
(`sampling.seed=3`). A job's values are the group's as written, with each override converted as its
typed node converts it, and the few interpolations (`${vars.subject}`, a prompt set's row,
`${zoo_size:1024}`) resolved by OmegaConf itself, in the group's config with the job's values set,
once per distinct value of what they read. Anything else — a key added or deleted, a dict or list
value, a value the schema refuses, a missing value, an interpolation that fails — takes the exact
path: a copy of the group's config with Hydra's own override code applied, resolved by OmegaConf,
which also words the error. tests/test_job_values.py checks the two paths agree.
"""
from __future__ import annotations

import contextlib
import copy
import re
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.types import Override, OverrideType
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.nodes import ValueNode

from runner.config.plain import UNRESOLVED, Plain, as_plain, plain
from runner.config.schema import check_vars_used

# What each resolver of this project's configs reads, besides its arguments: an interpolation using
# one is resolved again only when an override of these keys changes. A resolver not listed here
# (oc.select, a user's own...) is resolved again for every job.
RESOLVER_INPUTS = {"prompt_row": ("prompt", "prompts"), "zoo_size": ("zoo",), "now": (), "oc.env": ()}
EVERYTHING = None  # an interpolation whose inputs cannot be told: any override may change it
_INTERPOLATION = re.compile(r"\$\{([^${}]*)\}")
_PRIMITIVE = (str, int, float, bool, type(None))


class ExactPathNeeded(Exception):
    """This job's overrides are beyond the quick path: compose it the exact way."""


class GroupValues:
    """A group's task config as plain data, and each of its jobs' values from it."""

    def __init__(self, task: DictConfig) -> None:
        self.task = task
        self.written = plain(OmegaConf.to_container(task, resolve=False))  # interpolations as text
        self.missing = {path for path, value in _leaves(self.written) if value == "???"}
        self.interpolations = {path for path, value in _leaves(self.written) if _is_interpolation(value)}
        self._converted: Dict[Tuple[str, str], Any] = {}
        self._resolved: Dict[Tuple[str, str, tuple], Any] = {}
        self._inputs: Dict[str, Optional[Set[str]]] = {}

    def of(self, overrides: Sequence[Override]) -> Plain:
        """The resolved values of the job that applies these value overrides to the group's config."""
        try:
            return self._quick(overrides)
        except ExactPathNeeded:
            return self.exact(overrides)

    def exact(self, overrides: Sequence[Override]) -> Plain:
        """As Hydra composes the job: a copy of the group's config, the overrides applied by Hydra."""
        task = copy.deepcopy(self.task)
        ConfigLoaderImpl._apply_overrides_to_config(list(overrides), task)
        return as_plain(task)

    def _quick(self, overrides: Sequence[Override]) -> Plain:
        changed = dict(self._change(override) for override in overrides)
        if self.missing - set(changed):
            raise ExactPathNeeded  # a value left `???`: the exact path says which
        written = _with(self.written, changed)
        check_vars_used(written["sampling"], written.get("vars"))
        pending = {path for path in self.interpolations if path not in changed}
        pending |= {path for path, value in changed.items() if _is_interpolation(value)}
        resolved = {path: self._resolve(path, _at(written, path), changed)
                    for path in pending if path.split(".")[0] not in UNRESOLVED}
        return _with(written, resolved)

    def _change(self, override: Override) -> Tuple[str, Any]:
        """(key, value as the typed node holds it) for a plain change of an existing value."""
        if (override.type not in (OverrideType.CHANGE, OverrideType.ADD, OverrideType.FORCE_ADD)
                or override.package is not None or override.is_sweep_override()):
            raise ExactPathNeeded
        key, value = override.key_or_group, override.value()
        if not isinstance(value, _PRIMITIVE):
            raise ExactPathNeeded
        exists = _is_leaf(self.written, key)
        if override.type == (OverrideType.ADD if exists else OverrideType.CHANGE):
            raise ExactPathNeeded  # `+` of a key that is there, or a change of one that is not: Hydra refuses
        if not exists and not self._takes_any(key):
            raise ExactPathNeeded  # a new key where the schema declares types
        memo = (key, repr(value))
        if not exists:
            return key, value  # a new key of an untyped mapping (`++vars.subject=cat`) holds the value as is
        if memo not in self._converted:
            node = self._node(key)
            if not isinstance(node, ValueNode):
                raise ExactPathNeeded
            trial = copy.copy(node)
            try:
                trial._set_value(value)  # the node's own type check and conversion ("4" -> 4 where int)
            except Exception:
                raise ExactPathNeeded from None  # the exact path raises Hydra's own error for it
            self._converted[memo] = trial._value()
        return key, self._converted[memo]

    def _takes_any(self, key: str) -> bool:
        """Whether `key` is new in a mapping that holds values of any type (such as `vars`)."""
        parent, _, last = key.rpartition(".")
        holder = _at(self.written, parent) if parent else None
        if not isinstance(holder, dict) or last in holder:
            return False
        return OmegaConf.select(self.task, parent)._metadata.element_type is Any

    def _node(self, key: str) -> Any:
        parent, _, last = key.rpartition(".")
        container = OmegaConf.select(self.task, parent) if parent else self.task
        return container._get_node(last)

    def _resolve(self, path: str, text: str, changed: Dict[str, Any]) -> Any:
        inputs = self._inputs_of(path, text)
        relevant = tuple(sorted((key, repr(value)) for key, value in changed.items()
                                if inputs is EVERYTHING or any(_overlaps(key, read) for read in inputs)))
        memo = (path, text, relevant)
        if memo not in self._resolved:
            try:
                with _values_set(self.task, changed):
                    self._resolved[memo] = plain(_resolved_at(self.task, path))
            except Exception:
                raise ExactPathNeeded from None  # the exact path words the failure
        return self._resolved[memo]

    def _inputs_of(self, path: str, text: str) -> Optional[Set[str]]:
        """The keys an interpolation reads, following interpolations it reads; EVERYTHING if unknown."""
        if text not in self._inputs:
            self._inputs[text] = _inputs(text, self.written, self.interpolations)
        return self._inputs[text]


def _inputs(text: str, written: Plain, interpolations: Set[str], seen: Optional[Set[str]] = None) -> Optional[Set[str]]:
    tokens = _INTERPOLATION.findall(text)
    if text.count("${") != len(tokens):
        return EVERYTHING  # nested interpolations
    seen = set() if seen is None else seen
    found: Set[str] = set()
    for token in tokens:
        if ":" in token:
            name = token.split(":", 1)[0].strip()
            if name not in RESOLVER_INPUTS:
                return EVERYTHING
            found.update(RESOLVER_INPUTS[name])
            continue
        key = token.strip()
        if not key or key.startswith("."):
            return EVERYTHING  # relative: read from where the node sits
        found.add(key)
        for other in interpolations:  # what it reads may be an interpolation itself
            if _overlaps(other, key) and other not in seen:
                seen.add(other)
                deeper = _inputs(_at(written, other), written, interpolations, seen)
                if deeper is EVERYTHING:
                    return EVERYTHING
                found |= deeper
    return found


def _overlaps(key: str, read: str) -> bool:
    return key == read or key.startswith(read + ".") or read.startswith(key + ".")


def _is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def _leaves(data: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], data


def _is_leaf(data: Plain, key: str) -> bool:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return not isinstance(node, (dict, list))


def _at(data: Plain, key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data


def _with(data: Plain, changes: Dict[str, Any]) -> Plain:
    """`data` with each dotted key set, copying only the mappings on the way (the rest is shared)."""
    if not changes:
        return data
    result = Plain(data)
    nested: Dict[str, Dict[str, Any]] = {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            result[head] = value
    for head, inner in nested.items():
        result[head] = _with(result[head], inner)
    return result


@contextlib.contextmanager
def _values_set(task: DictConfig, changed: Dict[str, Any]) -> Iterator[None]:
    """The task config with these (already converted) values in place, put back after."""
    nodes: List[Tuple[Any, Any]] = []
    added: List[Tuple[DictConfig, str]] = []
    with read_write(task), open_dict(task):
        try:
            for key, value in changed.items():
                parent, _, last = key.rpartition(".")
                container = OmegaConf.select(task, parent) if parent else task
                node = container._get_node(last)
                if node is None:  # a new key (`++vars.subject=cat`)
                    container[last] = value
                    added.append((container, last))
                else:
                    nodes.append((node, node._value()))
                    node._set_value(value)
            yield
        finally:
            for node, old in reversed(nodes):
                node._set_value(old)
            for container, last in added:
                del container[last]


def _resolved_at(task: DictConfig, path: str) -> Any:
    value = OmegaConf.select(task, path, throw_on_resolution_failure=True, throw_on_missing=True)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
