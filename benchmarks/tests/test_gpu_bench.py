"""The GPU benchmark's code path, on the scaled-down architectures and the CPU: it builds SDXL from
configs, fuses a LoRA, times every variant, runs the whole-runner comparison and writes its tables
(the numbers are not asserted)."""
import json
import tempfile

import pytest

from benchmarks import gpu_bench


def test_the_gpu_benchmark_runs_end_to_end_on_tiny_architectures(tiny_zoo, tmp_path, monkeypatch):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))  # the system's temp folder, where --work defaults
    folders = []
    measure_sweep = gpu_bench.measure_sweep
    monkeypatch.setattr(gpu_bench, "measure_sweep", lambda *args: folders.append(args[-1]) or measure_sweep(*args))
    assert gpu_bench.main(["--tiny", "--size", "64", "--batches", "1,2", "--repeats", "1", "--sweep-seeds", "2",
                           "--out", str(out)]) == 0
    # --out holds only the tables (a run cut short leaves its work folder behind): the model and
    # images go elsewhere
    assert len(folders) == 1 and folders[0].parent == work
    assert sorted(p.name for p in out.rglob("*")) == ["gpu_bench.json", "gpu_bench.md"]
    assert not list(work.iterdir()), "the saved model and images are removed"
    result = json.loads((out / "gpu_bench.json").read_text())
    assert result["tiny"] is True and result["size"] == 64
    assert {(r["variant"], r["batch"]) for r in result["rows"]} >= {("eager", 1), ("eager", 2), ("channels_last", 1),
                                                                   ("channels_last+vae_slicing", 2)}
    assert all(r["seconds_per_call"] > 0 and r["images_per_second"] > 0 for r in result["rows"])
    assert "| eager | 2 |" in (out / "gpu_bench.md").read_text()

    sweep = result["sweep"]
    assert (sweep["seeds"], sweep["batch"]) == (2, 2)
    for way, seconds in sweep["seconds"].items():
        assert seconds > 0 and sweep["images_per_second"][way] == pytest.approx(2 / seconds, rel=0.01)
        assert sweep["ratios"][way] == pytest.approx(seconds / sweep["seconds"]["card_loop"], abs=1e-3)
    assert "seeds batched 2 to a call" in (out / "gpu_bench.md").read_text()


def test_full_size_configs_are_sdxl():
    assert gpu_bench.SDXL_UNET["transformer_layers_per_block"] == (1, 2, 10)
    assert gpu_bench.SDXL_UNET["cross_attention_dim"] == gpu_bench.CLIP_L["hidden_size"] + gpu_bench.CLIP_BIGG["hidden_size"]
    assert gpu_bench.SDXL_UNET["projection_class_embeddings_input_dim"] == 6 * 256 + gpu_bench.CLIP_BIGG["projection_dim"]


def test_a_failing_variant_is_recorded_and_the_others_still_run_and_are_written_as_they_finish(
        tiny_zoo, tmp_path, monkeypatch):
    """A GPU run under a time limit: an option that fails there (inductor without a compiler, out of
    memory) must not cost the other measurements, and a run stopped by a time limit keeps what it
    measured so far."""
    def broken(pipe):
        raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(gpu_bench, "variants", lambda device: {"eager": lambda pipe: None, "broken": broken,
                                                               "channels_last": lambda pipe: None})
    seen = []
    result = gpu_bench.run(True, 64, 2, [1], 1, 0, tmp_path, report=lambda partial: seen.append(
        ([r["variant"] for r in partial["rows"]], partial["complete"])))
    assert seen == [(["eager"], False), (["eager", "broken"], False), (["eager", "broken", "channels_last"], False)]
    assert result["complete"] is True
    failed = result["rows"][1]
    assert failed == {"variant": "broken", "batch": None, "error": "RuntimeError: no C++ compiler found"}
    assert "| broken | - | failed: RuntimeError: no C++ compiler found |" in gpu_bench.to_markdown(result)
    assert "Incomplete" in gpu_bench.to_markdown({**result, "complete": False})

    only = gpu_bench.run(True, 64, 2, [1], 1, 0, tmp_path, only=["channels_last"])
    assert [r["variant"] for r in only["rows"]] == ["channels_last"]


def test_unknown_variants_are_refused_with_the_known_names(capsys, tmp_path):
    with pytest.raises(SystemExit) as refused:
        gpu_bench.main(["--tiny", "--variants", "eager,fast", "--out", str(tmp_path)])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "--variants eager,fast" in err and "compile_regional+channels_last" in err


def test_the_layout_variants_hold_the_unet_and_vae_as_the_runner_does(tiny_zoo):
    import torch

    def layout(model):
        return {w.is_contiguous(memory_format=torch.channels_last) for w in model.parameters() if w.dim() == 4}

    for name, slicing in (("channels_last", False), ("channels_last+vae_slicing", True)):
        pipe = gpu_bench.sdxl_pipeline(True, "cpu")
        gpu_bench.variants("cpu")[name](pipe)
        assert layout(pipe.unet) == layout(pipe.vae) == {True}, name
        assert pipe.vae.use_slicing is slicing, name
