"""`pip install .` ships the configs and experiments inside the wheel, and no benchmark code, and
lcm-run works from it."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


@pytest.mark.slow
def test_the_wheel_carries_configs_and_runs_an_experiment(tiny_zoo, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), root], check=True, capture_output=True)
    (wheel,) = wheels.glob("lcm_runner-*.whl")
    files = zipfile.ZipFile(wheel).namelist()
    assert not [name for name in files if name.startswith("benchmarks/") or "bench" in Path(name).name], \
        "the benchmarks stay out of the wheel"
    assert {"runner/engine/state.py", "runner/config/schema.py", "runner/config/builtin_prompts.tsv",
            "hydra_plugins/lcm_runner_sweeper/lcm_sweeper.py"} <= set(files)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, capture_output=True)
    assert (target / "runner/conf/config.yaml").is_file()
    assert (target / "runner/conf/experiment/t2i_adapter_canny.yaml").is_file()
    env = dict(os.environ, PYTHONPATH=str(target), HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", "import sys, runner.commands.lcm_run; sys.argv[0] = 'lcm-run'; "
                           "print(runner.config.config_dir(), file=sys.stderr); runner.commands.lcm_run.entry()",
                           "experiment=t2i_adapter_canny", "zoo=tiny", "sampling.height=64", "sampling.width=64",
                           f"hydra.run.dir={tmp_path / 'job'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == str(target / "runner" / "conf")
    assert json.loads((tmp_path / "job" / "run.json").read_text())["status"] == "ok"
