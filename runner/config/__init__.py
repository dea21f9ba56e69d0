"""Torch-free: what a user types, checked and planned before any model loads.

`schema` (the structured config and its validation), `job_plan` (what a job loads and calls),
`sources` and `file_checks` (weight references and their files), `conditioning` (what each kind
needs), `prompt_sets` (a set's rows, the sweep axis `prompt`), `recorded` (a config read back from an
image's metadata). Importing this package registers the schema with Hydra's ConfigStore and the
`${prompt_row:...}` resolver, and imports neither torch nor diffusers.
"""
from pathlib import Path

from runner.config import prompt_sets  # noqa: F401  (registers ${prompt_row:...}, which conf/prompts/ uses)
from runner.config.schema import (
    DeviceConfig,
    LoraEntry,
    ModelConfig,
    PathsConfig,
    RunConfig,
    SamplingConfig,
    ZooConfig,
    job_identity,
    plain_value,
    record_of,
    to_container,
    validate,
)


def config_dir() -> str:
    """conf/ inside the wheel (runner/conf), or beside the package in a source checkout."""
    package = Path(__file__).resolve().parent.parent
    packaged = package / "conf"
    return str(packaged if packaged.is_dir() else package.parent / "conf")


__all__ = ["DeviceConfig", "LoraEntry", "ModelConfig", "PathsConfig", "RunConfig", "SamplingConfig", "ZooConfig",
           "config_dir", "job_identity", "plain_value", "record_of", "to_container", "validate"]
