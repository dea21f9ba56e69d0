"""runner.sweep.fast_yaml.to_yaml is OmegaConf.to_yaml, byte for byte, whichever emitter it picks."""
import string

from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from omegaconf._utils import get_omega_conf_dumper

from runner.sweep import fast_yaml

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


trusted_scalars = st.one_of(st.text(alphabet=string.printable[:95], max_size=120), st.integers(),
                            st.floats(allow_nan=False), st.booleans(), st.none(),
                            st.sampled_from(["true", "1", "", "a: b", "#", "~", "${a.b}", "x" * 90 + " y" * 20]))
untrusted_texts = st.text(min_size=1, max_size=160).filter(lambda text: not (text.isascii() and text.isprintable()))


@settings(max_examples=200, deadline=None)
@given(untrusted_texts, untrusted_texts, st.lists(st.text(alphabet=string.ascii_letters, min_size=1, max_size=30),
                                                  min_size=1, max_size=4, unique=True),
       st.data())
def test_documents_of_one_shape_are_written_as_omegaconf_writes_them(help_text, footer, keys, data):
    """The verdict taken on the first document of a shape holds for the next ones: the untrusted
    strings (newlines, tabs, other alphabets) in the same places, printable-ASCII scalars changed."""
    fast_yaml._SAME_IN_C.clear()
    for _ in range(4):
        values = [data.draw(trusted_scalars) for _ in keys]
        cfg = OmegaConf.create({"help": {"template": help_text, "values": dict(zip(keys, values))},
                                "list": [values[0], footer, {"k": values[-1]}], "footer": footer})
        assert fast_yaml.to_yaml(cfg) == OmegaConf.to_yaml(cfg)
    # other untrusted strings in the same places: another shape, judged anew
    cfg.help.template, cfg.footer = data.draw(untrusted_texts), data.draw(untrusted_texts)
    assert fast_yaml.to_yaml(cfg) == OmegaConf.to_yaml(cfg)


def test_hydras_config_takes_the_fast_emitter_after_its_first_job(monkeypatch):
    """hydra.yaml holds Hydra's help texts (newlines): its first job is written both ways and
    compared, the next ones by libyaml alone."""
    import yaml
    from tests.helpers import CONF
    from hydra import compose, initialize_config_dir

    configs = []
    for seed in (1, 2, 3):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=["zoo=tiny", f"sampling.seed={seed}"], return_hydra_config=True)
        assert not fast_yaml._printable_ascii(OmegaConf.to_container(cfg.hydra))
        configs.append((cfg.hydra, OmegaConf.to_yaml(cfg.hydra)))
    fast_yaml._SAME_IN_C.clear()
    dumpers = []
    dump = yaml.dump
    monkeypatch.setattr(yaml, "dump", lambda *args, **kwargs: dumpers.append(kwargs["Dumper"]) or dump(*args, **kwargs))
    assert [fast_yaml.to_yaml(cfg) for cfg, _ in configs] == [text for _, text in configs]
    assert dumpers == [get_omega_conf_dumper(), fast_yaml._C_DUMPER, fast_yaml._C_DUMPER, fast_yaml._C_DUMPER], \
        "both for the first, C alone for the next two"
