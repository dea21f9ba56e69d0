"""runner.sweep.startup.composed_once against Hydra's own start: the configs Hydra's start hands on are
the same, and a run or a multirun composes one config fewer."""
import contextlib
import shutil
import sys

import hydra
import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.hydra import Hydra
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from runner.config import config_dir as project_config_dir
from runner.sweep import startup

PLAIN_HYDRA = ["hydra/sweeper=basic", "~hydra.callbacks.lcm_runner"]
STARTS = {  # command line -> compositions saved
    "-m value sweep": (["-m", "zoo=tiny", "sampling.seed=0,1", "sampling.prompt='a fox, running'"], 1),
    "-m experiment with sweeper params": (["-m", "experiment=sweep_steps_guidance", "hydra.sweeper.params="
                                           "{sampling.steps: '1,2', sampling.guidance_scale: '0', sampling.seed: '0'}",
                                           "+hydra.job.env_set.X=y"], 1),
    "-m group sweep": (["--multirun", "scheduler=lcm,euler_a", "lora=lcm,none"], 1),
    "mode set by an override, no -m": (["hydra.mode=MULTIRUN", "sampling.seed=0,1"], 1),
    "-m over hydra.mode=RUN (Hydra warns)": (["-m", "hydra.mode=RUN", "sampling.seed=3"], 1),
    "a single run": (["sampling.seed=3"], 1),
    "a single run, mode set by an override": (["hydra.mode=RUN", "experiment=lora_papercut", "zoo=tiny"], 1),
    "a single run with a group deleted and a key added": (["~lora", "+sampling.extra=1"], 1),
}
FAILURES = {
    "-m with an unknown key": ["-m", "sampling.nope=1"],
    "-m sweeping Hydra's own config": ["-m", "hydra.job.name=a,b"],
    "a single run given a sweep": ["sampling.seed=0,1"],
}


def start(arguments, tmp_path, monkeypatch, reuse, config_dir=None):
    with monkeypatch.context() as patches:
        return _start(arguments, tmp_path, patches, reuse, config_dir or project_config_dir())


def _start(arguments, tmp_path, monkeypatch, reuse, config_dir):
    """Run a no-op Hydra app over the project's config; return the configs Hydra.compose_config
    gave back (as YAML, when each came back) and how many compositions the loader made."""
    seen, composed = [], []
    compose, compose_impl = Hydra.compose_config, ConfigLoaderImpl._load_configuration_impl

    def recording(self, *args, **kwargs):
        config = compose(self, *args, **kwargs)
        seen.append(OmegaConf.to_yaml(config))
        return config

    def counting(self, *args, **kwargs):
        composed.append(1)
        return compose_impl(self, *args, **kwargs)

    monkeypatch.setattr(Hydra, "compose_config", recording)
    monkeypatch.setattr(ConfigLoaderImpl, "_load_configuration_impl", counting)
    app = hydra.main(config_path=config_dir, config_name="config", version_base="1.3")(lambda cfg: None)
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
    plain = PLAIN_HYDRA if config_dir == project_config_dir() else []  # another config has no callbacks of ours
    monkeypatch.setattr(sys, "argv", ["app", *arguments, *plain, f"hydra.sweep.dir={tmp_path / 'out'}",
                                      f"hydra.run.dir={tmp_path / 'out'}"])
    GlobalHydra.instance().clear()
    try:
        with startup.composed_once() if reuse else contextlib.nullcontext():
            app()
    finally:
        GlobalHydra.instance().clear()
    return seen, len(composed)


@pytest.mark.parametrize("name", STARTS)
def test_hydras_start_hands_on_the_same_configs_composing_fewer(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    arguments, saved = STARTS[name]
    hydras, hydras_count = start(arguments, tmp_path, monkeypatch, reuse=False)
    ours, our_count = start(arguments, tmp_path, monkeypatch, reuse=True)

    assert len(hydras) == 2, "Hydra's start: the mode probe, then the run's or the sweep's config"
    assert ours == hydras
    assert our_count == hydras_count - saved


@pytest.mark.parametrize("name", FAILURES)
def test_bad_starts_fail_as_in_hydra(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # raise, instead of Hydra printing and exiting
    errors = []
    for reuse in (False, True):
        with pytest.raises(Exception) as raised:
            start(FAILURES[name], tmp_path, monkeypatch, reuse)
        errors.append((type(raised.value), str(raised.value), str(raised.value.__cause__)))
    assert errors[0] == errors[1]


def test_a_run_missing_a_group_choice_fails_as_in_hydra(tmp_path, monkeypatch):
    """Hydra's mode probe skips a group default left `???`; the run must still refuse it."""
    conf = tmp_path / "conf"
    (conf / "db").mkdir(parents=True)
    (conf / "config.yaml").write_text("defaults:\n  - db: ???\n  - _self_\nx: 1\n")
    (conf / "db" / "mysql.yaml").write_text("a: 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    errors = []
    for reuse in (False, True):
        with pytest.raises(Exception) as raised:
            start(["x=2"], tmp_path, monkeypatch, reuse, str(conf))
        errors.append((type(raised.value), str(raised.value)))
    assert errors[0] == errors[1] and "You must specify 'db'" in errors[0][1]
    hydras, _ = start(["-m", "db=mysql"], tmp_path, monkeypatch, False, str(conf))
    ours, _ = start(["-m", "db=mysql"], tmp_path, monkeypatch, True, str(conf))
    assert ours == hydras and len(ours) == 2


def test_the_loader_is_put_back_even_when_the_app_fails():
    original = ConfigLoaderImpl.load_configuration
    with pytest.raises(RuntimeError):
        with startup.composed_once():
            assert ConfigLoaderImpl.load_configuration is not original
            raise RuntimeError("the app failed")
    assert ConfigLoaderImpl.load_configuration is original
