"""The full-size CPU measurement's code path, on the scaled-down architectures: it builds SDXL and a
LoRA from configs, runs each way in a process of its own and writes its tables (the numbers are not
asserted)."""
import json
import sys

from benchmarks import full_size_cpu


def test_the_full_size_cpu_measurement_runs_each_way_on_tiny_architectures(tiny_zoo, tmp_path):
    assert full_size_cpu.main(["--tiny", "--size", "32", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "full_size_cpu.json").read_text())
    rows = {row["way"]: row for row in result["rows"]}
    assert list(rows) == list(full_size_cpu.WAYS)
    assert set(rows["card"]["seconds"]) == {"load", "lora", "fuse", "generate", "wall"}
    assert set(rows["lcm_run"]["seconds"]) == {"load", "prepare", "generate", "wall"}
    assert set(rows["lcm_run_sweep"]["seconds"]) == {"first job load", "first job prepare", "first job generate",
                                                      "stack change prepare", "stack change generate", "wall"}
    for row in rows.values():
        assert all(seconds >= 0 for seconds in row["seconds"].values())
        if sys.platform == "linux":
            assert 0 < row["anonymous_gib"] <= row["peak_gib"]
    table = (tmp_path / "full_size_cpu.md").read_text()
    assert "| lcm_run_sweep | first job load" in table
    assert not list(tmp_path.glob(".full-size-cpu-*")), "the model written for it is removed"
