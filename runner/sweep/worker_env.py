"""The `${worker_env:}` resolver: the environment variables that decide what a job loads, as set in
the process that starts the sweep, for launchers whose workers do not inherit that environment.

A Ray cluster's workers are started by its head node (`ray start --head`), not by `lcm-run`: without
these, a worker would read the Hugging Face cache online and build its own tiny zoo elsewhere.
conf/hydra/launcher/ray_cluster.yaml passes them through Ray's `runtime_env`.
"""
from __future__ import annotations

import os
from typing import Dict

from omegaconf import OmegaConf

PASSED = ("HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "LCM_RUNNER_ZOO", "LCM_RUNNER_MODELS", "OMP_NUM_THREADS")


def worker_env() -> Dict[str, str]:
    """Those of PASSED that are set here."""
    return {name: os.environ[name] for name in PASSED if os.environ.get(name)}


OmegaConf.register_new_resolver("worker_env", worker_env, replace=True)
