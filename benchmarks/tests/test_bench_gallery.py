"""`python -m benchmarks.bench_gallery` on a small sweep: both galleries measured, the table from the
figures. No timing is asserted (the machine may be busy)."""
import json
import subprocess
import sys

import pytest

from tests.browser import CHROMIUM


@pytest.mark.slow
def test_the_gallery_benchmark_measures_both_galleries_and_reports_their_ratios(tmp_path):
    if not CHROMIUM.exists():
        pytest.fail("Chromium is needed to render the galleries: apt-get install -y chromium")
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_gallery", "--sizes", "40", "--repeats", "1", "--thumbnail-images", "2",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads((tmp_path / "bench_gallery.json").read_text())
    (size,) = result["sizes"]
    assert size["images"] == 40 and set(size["best"]) == {"before", "after"}
    for way, best in size["best"].items():
        assert all(best[key] > 0 for key in ("write_s", "render_s", "sort_s", "filter_s")), (way, best)
        assert best["elements"] > 40 * 5, "every image's figure is drawn: 40 fit one page"
    assert all(seconds > 0 for seconds in result["thumbnails_s_per_image"].values())
    table = (tmp_path / "bench_gallery.md").read_text()
    after, before = size["best"]["after"], size["best"]["before"]
    ratios = " | ".join(f"{after[key] / before[key]:.3f}" for key in ("write_s", "render_s", "sort_s", "filter_s", "elements"))
    assert f"| 40 | after / before | {ratios} | |" in table
