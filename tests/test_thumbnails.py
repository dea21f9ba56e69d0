"""Thumbnails kept by the writer: the end-of-sweep contact sheet uses them instead of reading the
images back, and is byte for byte the sheet drawn from the files on disk."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import bench
from tests.helpers import count_image_opens
from runner.commands import lcm_run
from runner.outputs import records, thumbnails
from runner.report import build_report


def noise(seed, size=(320, 240)):
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8))


def read_back(path):
    with Image.open(path) as image:
        return thumbnails.make(image)


@pytest.fixture(autouse=True)
def nothing_kept():
    thumbnails.forget()
    yield
    thumbnails.forget()


def test_a_kept_thumbnail_is_the_one_read_from_disk_until_the_file_changes(tmp_path):
    path = tmp_path / "image.png"
    records.save_png(path, noise(0))
    thumbnails.keep(path, noise(0))
    kept = thumbnails.of(path)
    assert kept.size == (256, 192)
    assert np.array_equal(np.asarray(kept), np.asarray(read_back(path)))
    assert thumbnails.of(path) is kept, "no second read"

    records.save_png(path, noise(1))  # replaced on disk, e.g. by a rerun in another process
    assert np.array_equal(np.asarray(thumbnails.of(path)), np.asarray(read_back(path)))
    assert not np.array_equal(np.asarray(thumbnails.of(path)), np.asarray(kept))


def test_the_oldest_thumbnails_are_dropped_beyond_the_memory_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(thumbnails, "MAX_KEPT_BYTES", 2 * 256 * 192 * 3)
    paths = [tmp_path / f"{n}.png" for n in range(3)]
    for n, path in enumerate(paths):
        records.save_png(path, noise(n))
        thumbnails.keep(path, noise(n))
    assert [Path(key).name for key in thumbnails._kept] == ["1.png", "2.png"]
    assert thumbnails._kept_bytes == 2 * 256 * 192 * 3


@pytest.mark.slow
def test_the_sweeps_contact_sheet_comes_from_kept_thumbnails_and_equals_the_one_from_disk(
        tiny_zoo, tmp_path, monkeypatch):
    opened = count_image_opens(monkeypatch, thumbnails)
    sweep_dir = tmp_path / "sweep"
    bench.run_hydra(lcm_run.run_app, ["zoo=tiny", "device=cpu", "sampling.height=320", "sampling.width=320",
                                  "sampling.steps=1", "sampling.seed=0,1", f"hydra.sweep.dir={sweep_dir}"])
    at_the_end = (sweep_dir / "contact_sheet.png").read_bytes()
    assert opened == [], "the end-of-sweep sheet read no image back"
    assert thumbnails._kept == {}, "forgotten after the sweep"

    build_report(sweep_dir)  # as lcm-grid would, from the files alone
    assert len(opened) == 2
    assert (sweep_dir / "contact_sheet.png").read_bytes() == at_the_end
