"""runner.fast_yaml.to_yaml is OmegaConf.to_yaml, byte for byte, whichever emitter it picks."""
import string

from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from runner import fast_yaml

# Printable ASCII takes libyaml's emitter; the rest (accents, control characters) OmegaConf's own.
texts = st.one_of(st.text(alphabet=string.printable[:95], max_size=120), st.text(max_size=40),
                  st.sampled_from(["true", "1", "1.5", "null", "", " x", "a: b", "- x", "#", "'q'", "~", "${a.b}",
                                   "???", "y", "0x1F", "1e3", "a" * 100 + " " + "b" * 100]),
                  # keys near the 123 characters from which PyYAML writes `? key` (libyaml from 129)
                  st.text(alphabet=string.printable[:95], min_size=95, max_size=135))
scalars = st.one_of(texts, st.integers(), st.floats(allow_nan=False), st.booleans(), st.none())
configs = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(texts, inner, max_size=4)), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(texts, configs, min_size=1, max_size=5))
def test_same_bytes_as_omegaconf(data):
    try:
        cfg = OmegaConf.create(data)
    except Exception:  # keys or values OmegaConf itself refuses
        return
    assert fast_yaml.to_yaml(cfg) == OmegaConf.to_yaml(cfg)


def test_printable_ascii_takes_the_fast_emitter():
    assert fast_yaml._C_DUMPER is not None, "PyYAML built with libyaml (the wheels are)"
    assert fast_yaml._printable_ascii({"a": ["b c", 1, 2.5, None, True]})
    assert not fast_yaml._printable_ascii({"a": "müde"}) and not fast_yaml._printable_ascii({"a\t": 1})


def test_a_long_key_is_written_as_omegaconf_writes_it():
    """Found by a fuzz: PyYAML writes `? key` from 123 characters, libyaml from 129."""
    for key in ("k" * 99, "k" * 100, "k" * 123, "k" * 128, "0" * 125, "k" * 129, "'" + "k " * 64):
        cfg = OmegaConf.create({key: 1, "nested": {key: [key]}})
        assert fast_yaml.to_yaml(cfg) == OmegaConf.to_yaml(cfg), len(key)
