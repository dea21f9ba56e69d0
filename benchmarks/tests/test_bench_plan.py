"""`python -m benchmarks.bench_plan` measures plan=true and the empty-task sweeper, here and at a
baseline commit, and writes per-job figures that follow from its times. No timing is asserted."""
import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_bench_plan_writes_per_job_figures_and_ratios_against_a_baseline(tiny_zoo, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_plan", "--jobs", "4", "--repeats", "1",
                           "--baseline", "HEAD", "--out", str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads((tmp_path / "bench_plan.json").read_text())
    for measured in (result["this"], result["baseline"]):
        for times in [*measured["plan"].values(), measured["empty_task"]]:
            one, four = times["1"], times["4"]
            assert 0 < one["wall_s"] and 0 < four["cpu_s"]
            assert four["wall_ms_per_job"] == pytest.approx((four["wall_s"] - one["wall_s"]) / 3 * 1000, abs=1e-3)
    assert set(result["ratios"]["plan"]) == {"seeds", "prompt_rows"} and "4" in result["ratios"]["empty_task"]
