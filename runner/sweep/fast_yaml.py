"""OmegaConf.to_yaml, through libyaml's emitter where that gives the same bytes.

Hydra writes three YAML files per job (`.hydra/config.yaml`, `hydra.yaml`, `overrides.yaml`) with
OmegaConf's dumper, a subclass of PyYAML's pure-Python one: ~12 ms a job, most of a sweep's per-job
overhead. libyaml's C emitter, fed the same nodes by the same representers, is ~4x faster. The two
emitters differ only in how they escape and quote characters outside printable ASCII (control
characters, non-ASCII letters); a differential fuzz of 300,000 random configs of printable-ASCII
strings found none; a property test (tests/test_fast_yaml.py) found one more: an empty key. A
later fuzz found another: a long key. PyYAML writes a key as `? key` from 123 characters on,
libyaml only from 129. So: C when every key and string is printable ASCII and every key is 1-99
characters long (a margin below 123), OmegaConf's own dumper otherwise.

A document with other strings is not written by C blindly, but need not always take the slow path:
Hydra's own config holds its help texts (with newlines) in every job's `hydra.yaml`, which made
that file ~5 ms a job instead of ~1.4. Each scalar is written on its own, so two documents of the
same shape — the same keys, lists and untrusted strings in the same places, only printable-ASCII
scalars different — come out alike from both emitters or differ alike. The first document of a
shape is written by both and compared; the verdict holds for the next ones.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf._utils import OmegaConfDumper, get_omega_conf_dumper


def _c_dumper():
    if not getattr(yaml, "__with_libyaml__", False):
        return None

    class CDumper(yaml.CDumper):  # OmegaConf's dumper: quotes strings that would read back as bool/int/float
        pass

    CDumper.add_representer(str, OmegaConfDumper.str_representer)
    return CDumper


_C_DUMPER = _c_dumper()


_SAME_IN_C: "OrderedDict[Any, bool]" = OrderedDict()  # shape -> whether C wrote it as OmegaConf does
_SHAPES_KEPT = 64


def to_yaml(cfg: Any) -> str:
    """Byte for byte what `OmegaConf.to_yaml(cfg)` returns."""
    container = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    if _C_DUMPER is None:
        return _dump(container, get_omega_conf_dumper())
    if _printable_ascii(container):
        return _dump(container, _C_DUMPER)
    shape = _shape(container)
    same = _SAME_IN_C.get(shape)
    if same is None:  # the first of its shape: written both ways
        text = _dump(container, get_omega_conf_dumper())
        _SAME_IN_C[shape] = _dump(container, _C_DUMPER) == text
        if len(_SAME_IN_C) > _SHAPES_KEPT:
            _SAME_IN_C.popitem(last=False)
        return text
    return _dump(container, _C_DUMPER if same else get_omega_conf_dumper())


def _dump(container: Any, dumper: Any) -> str:
    return yaml.dump(container, default_flow_style=False, allow_unicode=True, sort_keys=False, Dumper=dumper)


def _shape(value: Any) -> Any:
    """The document with each scalar C writes as PyYAML does replaced by one marker; the rest kept."""
    if isinstance(value, dict):
        return ("{", tuple((k if _simple_key(k) else ("!", k), _shape(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("[", tuple(_shape(v) for v in value))
    return "" if _printable_ascii(value) else ("!", type(value).__name__, repr(value))


def _printable_ascii(value: Any) -> bool:
    if isinstance(value, str):
        return value.isascii() and value.isprintable()
    if isinstance(value, dict):  # an empty or a long key: the emitters write it differently
        return all(_simple_key(k) and _printable_ascii(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_printable_ascii(v) for v in value)
    return isinstance(value, (int, float, bool, type(None)))


def _simple_key(key: Any) -> bool:
    if isinstance(key, str):
        return 0 < len(key) < _LONG_KEY and _printable_ascii(key)
    return _printable_ascii(key) and len(str(key)) < _LONG_KEY


_LONG_KEY = 100  # PyYAML writes `? key` from 123 characters (measured), libyaml from 129
