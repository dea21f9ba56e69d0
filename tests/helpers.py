"""Helpers the tests share: composing a config as lcm-run does, and running the installed console
script as a user would."""
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from runner.config import config_dir

CONF = Path(config_dir())


def make_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def lcm_run(*args: str, cwd: Path, env_extra=None) -> subprocess.CompletedProcess:
    """Run the installed console script as a user would."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", **(env_extra or {}))
    env.pop("HYDRA_FULL_ERROR", None)
    script = Path(sys.executable).with_name("lcm-run")
    return subprocess.run([str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def count_image_opens(monkeypatch, module) -> list:
    """The job images (`image_*`) `module` opens through PIL from now on, in order."""
    opened = []
    open_image = module.Image.open

    def counting_open(path, *args, **kwargs):
        if "image_" in str(path):
            opened.append(str(path))
        return open_image(path, *args, **kwargs)

    monkeypatch.setattr(module.Image, "open", counting_open)
    return opened
