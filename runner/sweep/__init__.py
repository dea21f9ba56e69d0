"""Everything that touches Hydra's internals, and nothing else does: the sweeper (`sweeper`), its
grid expansion and composition (`expansion`, `startup`), job launch (`launch`, `chunks`), batching of
jobs that differ only in seed or prompt (`batching`), the end-of-sweep callback (`callbacks`),
interrupts and GPU slots. Those internals change between Hydra's minor versions, so the supported
ones are checked when this package is imported."""
from importlib import metadata
from typing import Optional

from runner.errors import UserError

SUPPORTED_HYDRA = ("1.3",)  # minor versions whose internals runner.sweep was written and tested against


def check_hydra_version(version: Optional[str] = None) -> None:
    """A clear error, not an AttributeError deep in a sweep, where hydra-core is not a supported version."""
    version = version or metadata.version("hydra-core")
    if ".".join(version.split(".")[:2]) not in SUPPORTED_HYDRA:
        supported = ", ".join(f"{minor}.x" for minor in SUPPORTED_HYDRA)
        raise UserError(
            f"hydra-core {version} is installed, but lcm-runner's sweeper is built on Hydra's internals of "
            f"hydra-core {supported} only. Install a supported version: pip install 'hydra-core>=1.3,<1.4'.")


check_hydra_version()
