"""The package's walls: planning and reports never import torch or diffusers, the tiny zoo knows
nothing of the runner around it, Hydra's internals are touched from runner.sweep alone, and an
unsupported Hydra is named at once."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "runner"


def imported_after(code: str) -> set:
    """The modules a fresh interpreter holds after running `code`."""
    done = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
                          check=True, capture_output=True, text=True, timeout=120)
    return set(done.stdout.split())


@pytest.mark.parametrize("modules", [
    "runner.config, runner.config.job_plan, runner.config.recorded, runner.config.conditioning",
    "runner.report, runner.report.contact_sheets, runner.report.gallery, runner.commands.lcm_grid",
    "runner.sweep.expansion, runner.run",  # a dry run (plan=true) plans every job without torch
    "runner.commands.lcm_models, runner.config.models_root, runner.outputs.model_hashes",
])
def test_planning_and_reports_import_neither_torch_nor_diffusers(modules):
    assert not {"torch", "diffusers"} & imported_after(f"import {modules}")


def test_the_zoo_knows_nothing_of_the_runner():
    loaded = imported_after("import runner.zoo")
    assert {name for name in loaded if name.startswith("runner.")} == {"runner.zoo"}
    for path in (PACKAGE / "zoo").rglob("*.py"):
        imports = re.findall(r"^\s*(?:from|import) (runner\.[\w.]+)", path.read_text(), re.M)
        assert all(name.startswith("runner.zoo") for name in imports), (path.name, imports)


def test_hydras_internals_are_touched_from_runner_sweep_alone():
    touching = {path.relative_to(PACKAGE).parts[0] for path in PACKAGE.rglob("*.py")
                if "hydra._internal" in path.read_text()}
    assert touching == {"sweep"}


def test_an_unsupported_hydra_is_named_with_the_versions_that_work():
    from runner.errors import UserError
    from runner.sweep import check_hydra_version

    check_hydra_version("1.3.2")
    with pytest.raises(UserError, match=r"hydra-core 1\.4\.0 is installed.*1\.3\.x.*pip install 'hydra-core>=1\.3,<1\.4'"):
        check_hydra_version("1.4.0")
