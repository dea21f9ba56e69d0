"""Fixtures shared by tests/ and benchmarks/tests/. Tests never touch the network: HF_HUB_OFFLINE is
set before anything imports huggingface_hub, and the tiny zoo is built once per session into a
temporary folder. Helpers that tests import are in tests/helpers.py."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core: torch's own threads per worker would oversubscribe
    # the cores (two 2-thread processes on 2 cores run many times slower). Set before torch loads;
    # the lcm-run subprocesses a test starts inherit it.
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402


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
    from runner.engine.state import ENGINE

    ENGINE.reset()
    yield
    ENGINE.reset()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A single-node SLURM cluster on 127.0.0.1 (munge, slurmctld, slurmd) for the session, in a
    temporary folder; skipped where SLURM is not installed, failed there in CI (tests/clusters.py)."""
    from tests import clusters

    cluster = clusters.start_slurm(tmp_path_factory.mktemp("slurm"))
    yield cluster
    clusters.stop_slurm(cluster)


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """A local Ray head node on 127.0.0.1 for the session; skipped without the `ray` extra, failed
    then in CI (tests/clusters.py)."""
    from tests import clusters

    head = clusters.start_ray(tmp_path_factory.mktemp("ray"))
    yield head
    clusters.stop_ray(head)
