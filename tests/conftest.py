"""Shared fixtures. Tests never touch the network: HF_HUB_OFFLINE is set before anything imports
huggingface_hub, and the tiny zoo is built once per session into a temporary folder."""
import os
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core: torch's own threads per worker would oversubscribe
    # the cores (two 2-thread processes on 2 cores run many times slower). Set before torch loads;
    # the lcm-run subprocesses a test starts inherit it.
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

import runner.config  # noqa: E402,F401  (registers the schema)
from runner.cli import config_dir  # noqa: E402

CONF = Path(config_dir())


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory):
    """The tiny zoo, built once for the session; LCM_RUNNER_ZOO points every run at it."""
    from runner import zoo

    folder = tmp_path_factory.mktemp("zoo") / "tiny-zoo"
    os.environ[zoo.ENV_VAR] = str(folder)
    return zoo.ensure_zoo()


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, so that no real model the machine happens to hold is found."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def fresh_cache():
    """The process's model cache empty before the test and after it."""
    from runner import cache

    cache.clear()
    yield
    cache.clear()


def make_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def lcm_run(*args: str, cwd: Path, env_extra=None) -> subprocess.CompletedProcess:
    """Run the installed console script as a user would."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", **(env_extra or {}))
    env.pop("HYDRA_FULL_ERROR", None)
    script = Path(sys.executable).with_name("lcm-run")
    return subprocess.run([str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
