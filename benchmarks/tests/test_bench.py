"""`python -m benchmarks.bench --quick` runs every scenario three ways and writes results that add up.

No timing is asserted (the machine may be busy): only that every time is there and positive, that
the ratios come from those times, and that lcm-run and the naive app made the floor's pixels."""
import json
import os
import re
import subprocess
import sys

import pytest

SCENARIOS = {"seed_sweep", "steps_x_guidance", "lora_weight", "controlnet_scale"}
METHODS = {"floor", "lcm_run", "naive"}


def first_table(markdown):
    """The first markdown table's rows as {first cell: {column: cell}}, separator row left out."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    header, body = rows[0], rows[2:]
    assert all(len(row) == len(header) for row in body)
    return {row[0]: dict(zip(header, row)) for row in body}


@pytest.mark.slow
def test_quick_bench_writes_consistent_json_and_markdown(tiny_zoo, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench", "--quick", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]

    result = json.loads((tmp_path / "bench.json").read_text())
    assert {"cpus", "torch_threads", "torch", "diffusers"} <= set(result["machine"])
    assert {s["name"] for s in result["scenarios"]} == SCENARIOS
    for scenario in result["scenarios"]:
        name, wall = scenario["name"], scenario["wall_s"]
        assert set(wall) == METHODS and all(seconds > 0 for seconds in wall.values()), name
        assert scenario["ratios"]["lcm_run/floor"] == pytest.approx(wall["lcm_run"] / wall["floor"], abs=1e-3)
        assert scenario["ratios"]["naive/floor"] == pytest.approx(wall["naive"] / wall["floor"], abs=1e-3)
        assert scenario["ratios"]["naive/lcm_run"] == pytest.approx(wall["naive"] / wall["lcm_run"], abs=1e-3)
        # one round: each paired ratio is that round's own (from unrounded times, hence rel)
        assert scenario["paired_ratios"]["lcm_run/floor"] == pytest.approx(wall["lcm_run"] / wall["floor"], rel=0.01)
        overhead = (wall["lcm_run"] - wall["floor"]) / scenario["jobs"] * 1000
        assert scenario["lcm_run_overhead_ms_per_job"] == pytest.approx(overhead, abs=0.1)
        # lcm-run batches the seed sweep into one call, which may move a pixel by one level (float
        # rounding, as tests/test_sweeper.py allows); everything else is pixel for pixel.
        assert scenario["images_equal"]["naive"], name
        batched = scenario["lcm_run_batched_jobs"] > 0
        assert scenario["images_equal"]["lcm_run"] or (batched and scenario["pixels_max_difference"]["lcm_run"] <= 1)
    for sweeper in ("hydra_basic", "lcm_run_with_hydras_run_job", "lcm_run"):
        empty = result["empty_task"][sweeper]
        assert empty["one_job_s"] > 0 and empty["n_jobs_s"] > 0
        assert empty["ms_per_job"] == pytest.approx(
            (empty["n_jobs_s"] - empty["one_job_s"]) / (empty["jobs"] - 1) * 1000, abs=1.0)

    writes = result["writes"]
    assert set(writes["images_per_s"]) == {"by_hand", "writer_1_thread", "writer_auto"}
    for way, seconds in writes["seconds"].items():
        assert seconds > 0 and writes["images_per_s"][way] == pytest.approx(writes["images"] / seconds, rel=0.02)
    assert writes["writer_auto/by_hand"] == pytest.approx(
        writes["images_per_s"]["writer_auto"] / writes["images_per_s"]["by_hand"], abs=0.01)

    markdown = (tmp_path / "bench.md").read_text()
    assert markdown in done.stdout
    table = first_table(markdown)
    assert set(table) == SCENARIOS
    for scenario in result["scenarios"]:
        row = table[scenario["name"]]
        assert float(row["b/a"]) == pytest.approx(scenario["ratios"]["lcm_run/floor"], abs=0.01)
        assert float(row["c/b"]) == pytest.approx(scenario["ratios"]["naive/lcm_run"], abs=0.01)
        paired = [float(cell) for cell in row["b/a, c/a, c/b paired"].split(" / ")]
        assert paired == pytest.approx([scenario["paired_ratios"][k] for k in ("lcm_run/floor", "naive/floor",
                                                                              "naive/lcm_run")], abs=0.01)
        assert row["c = a pixels"] == "yes"
        assert (row["b = a pixels"] == "yes") == scenario["images_equal"]["lcm_run"]
    assert f"{result['machine']['cpus']} CPUs" in markdown
    for scenario in result["scenarios"]:  # every round's phases are kept, the fastest's among them
        rounds = scenario["attempts_breakdown_s"]["lcm_run"]
        assert len(rounds) == 1 and rounds[0]["generate"] == scenario["lcm_run_breakdown_s"]["generate"]
    assert not list(tmp_path.glob(".bench-work-*")), "the images and sweeps are temporary"


def test_rounds_alternate_the_order_and_paired_ratios_are_medians_of_each_rounds_ratio(monkeypatch, tmp_path):
    """Round 1 runs floor, lcm-run, naive; round 2 the reverse. The best-of ratio takes each method's
    fastest round; the paired ratio the median of the rounds' own ratios."""
    from benchmarks import bench

    walls = {"floor": [4.0, 2.0, 3.0], "lcm_run": [4.4, 3.0, 3.3], "naive": [8.0, 9.0, 9.0]}
    order = []

    def fake(method):
        def run(*args):
            order.append(method)
            wall = walls[method][sum(1 for m in order if m == method) - 1]
            return {"wall": wall, "report": 0.1, "everything_else": 0.2, "batched_jobs": 0}
        return run

    monkeypatch.setattr(bench, "run_floor", fake("floor"))
    monkeypatch.setattr(bench, "run_lcm", fake("lcm_run"))
    monkeypatch.setattr(bench, "run_naive", fake("naive"))
    monkeypatch.setattr(bench, "pixel_differences", lambda scenario, folders: {"lcm_run": 0, "naive": 0})
    scenario = bench.scenarios(bench.QUICK)[0]
    result = bench.bench_scenario(scenario, tmp_path, tmp_path, repeats=3)

    assert order == ["floor", "lcm_run", "naive", "naive", "lcm_run", "floor", "floor", "lcm_run", "naive"]
    assert result["ratios"]["lcm_run/floor"] == pytest.approx(3.0 / 2.0)  # the fastest of each
    assert result["paired_ratios"]["lcm_run/floor"] == pytest.approx(1.1)  # median of 1.1, 1.5, 1.1
    assert result["paired_ratios"]["naive/lcm_run"] == pytest.approx(9.0 / 3.3, abs=1e-3)  # of 1.82, 3.0, 2.73


def test_only_runs_the_named_scenarios_and_refuses_unknown_names(capsys):
    from benchmarks import bench

    assert bench.parse_args(["--only", "lora_weight,seed_sweep"])[2] == ["lora_weight", "seed_sweep"]
    with pytest.raises(SystemExit) as refused:
        bench.parse_args(["--only", "seed_sweep,lora"])
    assert refused.value.code == 2
    message = capsys.readouterr().err
    assert "no scenario named lora;" in message and "steps_x_guidance" in message


def test_lcm_run_overrides_reach_lcm_runs_jobs_only(tiny_zoo, tmp_path):
    """`--lcm-run-override` measures an option (device.channels_last=true) against the same floor:
    it is on lcm-run's command line and in its jobs' configs, and on neither of the others'."""
    from benchmarks import bench
    from runner.outputs import records

    settings, _, _ = bench.parse_args(["--quick", "--lcm-run-override", "device.channels_last=true",
                                       "--lcm-run-override", "sampling.num_images=1"])
    assert settings.lcm_run_overrides == ("device.channels_last=true", "sampling.num_images=1")
    scenario = next(s for s in bench.scenarios(settings) if s.name == "seed_sweep")
    assert scenario.lcm_run_overrides()[-2:] == ["device.channels_last=true", "sampling.num_images=1"]
    assert not any("channels_last" in override for override in scenario.overrides())  # the naive app's
    bench.run_lcm(scenario, tmp_path / "sweep")
    configs = [records.read_json(path)["config"] for path in (tmp_path / "sweep").glob(f"*/{records.RUN_JSON}")]
    assert len(configs) == len(scenario.jobs()) and all(c["device"]["channels_last"] is True for c in configs)
    lines = "\n".join(bench._preamble({"machine": bench.machine(), "settings": {
        **bench._settings_dict(settings), "device": "cpu", "floor_saves": bench.FLOOR_SAVES}}))
    assert "lcm-run -m` in-process, one model load, with `device.channels_last=true sampling.num_images=1`" in lines


@pytest.mark.slow
def test_the_metrics_benchmark_prices_a_scored_sweep_against_a_plain_one(tiny_zoo, capsys):
    from benchmarks import bench_metrics

    assert bench_metrics.main(["--repeats", "1"]) == 0
    table = capsys.readouterr().out
    rows = dict(re.findall(r"^\| ([^|]+) \| ([\d.]+) \|$", table, re.M))
    assert set(rows) == {"no metrics", "metrics=[clip_score]", "ratio"}
    assert float(rows["ratio"]) == pytest.approx(float(rows["metrics=[clip_score]"]) / float(rows["no metrics"]), abs=2e-3)
