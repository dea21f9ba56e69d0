"""`lcm-run`: the Hydra app. Thin on purpose; the work is in runner.run.run(cfg)."""
from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

import runner.config  # noqa: F401  (registers the structured schema before Hydra composes)
from runner.run import run


def config_dir() -> str:
    """conf/ inside the wheel, or beside the package in a source checkout / editable install."""
    packaged = Path(__file__).parent / "conf"
    return str(packaged if packaged.is_dir() else Path(__file__).parent.parent / "conf")


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
