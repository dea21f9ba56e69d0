"""The sweep gallery at scale: pages drawn from one JSON array, filters and orders over the whole
sweep, state in the URL's hash, thumbnails written once, and the contact sheets' index. The browser
test drives headless Chromium over the DevTools protocol (tests/browser.py)."""
import json
import os
import re
from urllib.parse import quote

import pytest
from PIL import Image

from runner.report import build_report, contact_sheets
from runner.report.gallery_thumbnails import FOLDER, write_gallery_thumbnails
from runner.report.sweep_folder import load_sweep
from tests.browser import CHROMIUM, Chromium
from tests.synthetic_sweep import write_sweep

DATA = re.compile(r'<script type="application/json" id="gallery-data">(.*?)</script>', re.S)


def gallery_data(page: str) -> dict:
    return json.loads(DATA.search(page)[1])


def test_big_images_get_a_thumbnail_written_once_small_ones_are_shown_as_they_are(tmp_path):
    big = write_sweep(tmp_path / "big", steps=[1, 2], guidance=[0.0], seeds=[0, 1], size=(640, 480), scored=False)
    page = build_report(big)["gallery"].read_text()
    thumbs = sorted(big.glob(f"{FOLDER}/*/*.jpg"))
    assert [p.relative_to(big).as_posix() for p in thumbs] == [
        f"{FOLDER}/{job}/image_00_seed{seed}.jpg" for job, seed in [(0, 0), (1, 1), (2, 0), (3, 1)]]
    assert {Image.open(p).size for p in thumbs} == {(256, 192)}
    shown = {row["file"]: row["thumb"] for row in gallery_data(page)["rows"]}
    assert shown == {f"{job}/image_00_seed{seed}.png": f"{FOLDER}/{job}/image_00_seed{seed}.jpg"
                     for job, seed in [(0, 0), (1, 1), (2, 0), (3, 1)]}
    written = {p: p.stat().st_mtime_ns for p in thumbs}
    image = big / "2" / "image_00_seed0.png"
    Image.new("RGB", (640, 480), (255, 0, 0)).save(image)  # a changed image: its thumbnail follows
    os.utime(image, ns=(written[thumbs[2]] + 10**9,) * 2)
    write_gallery_thumbnails(load_sweep(big))
    assert {p: p.stat().st_mtime_ns for p in thumbs if p != thumbs[2]} == {p: t for p, t in written.items() if p != thumbs[2]}
    assert Image.open(thumbs[2]).convert("RGB").getpixel((10, 10))[0] > 240
    small = write_sweep(tmp_path / "small", steps=[1, 2], guidance=[0.0], seeds=[0], size=(64, 64))
    assert write_gallery_thumbnails(load_sweep(small)) == {f"{job}/image_00_seed0.png": f"{job}/image_00_seed0.png"
                                                           for job in (0, 1)}
    assert not (small / FOLDER).exists()


def test_the_sheet_index_lists_each_sheet_with_its_pages(tmp_path, monkeypatch):
    sweep = write_sweep(tmp_path / "sweep", steps=[1, 2], guidance=[0.0, 1.0], seeds=[0, 1, 2], scored=False)
    monkeypatch.setattr(contact_sheets, "MAX_SIDE", 500)  # two of three columns a page
    written = build_report(sweep)
    sheets = ["contact_sheet_sampling.guidance_scale=0", "contact_sheet_sampling.guidance_scale=1"]
    assert [p.name for p in written["contact_sheets"]] == [f"{s}_p{n}.png" for s in sheets for n in (1, 2)]
    index = re.search(r'<nav class="sheets">.*?</nav>', written["gallery"].read_text(), re.S)[0]
    assert "<summary>Contact sheets: 2 sheets, 4 files</summary>" in index
    assert index.count("<li>") == 2 and all(
        f'<li>{s}: <a href="{quote(s)}_p1.png">page 1</a> <a href="{quote(s)}_p2.png">page 2</a></li>' in index
        for s in sheets)
    monkeypatch.setattr(contact_sheets, "MAX_SIDE", 16384)
    index = re.search(r'<nav class="sheets">.*?</nav>', build_report(sweep)["gallery"].read_text(), re.S)[0]
    assert [f'<li><a href="{quote(s)}.png">{s}.png</a></li>' in index for s in sheets] == [True, True]


@pytest.mark.slow
def test_a_gallery_of_300_images_pages_filters_and_sorts_the_whole_set_in_chromium(tmp_path):
    if not CHROMIUM.exists():
        pytest.fail("Chromium is needed to check the gallery in a browser: apt-get install -y chromium")
    sweep = write_sweep(tmp_path / "sweep", steps=[1, 2, 4], guidance=[0.0, 1.0], seeds=list(range(50)))
    gallery = build_report(sweep)["gallery"]
    records = {int(p.parent.name): json.loads(p.read_text()) for p in sweep.glob("*/run.json")}
    jobs = sorted(records)
    guidance = {job: records[job]["config"]["sampling"]["guidance_scale"] for job in jobs}
    scores = {job: records[job]["images"][0]["metrics"]["clip_score"] for job in jobs}
    seeds = {job: records[job]["config"]["sampling"]["seed"] for job in jobs}
    shown_jobs = "[...document.querySelectorAll('figure.item')].map(f => +f.querySelector('a[href$=\"run.json\"]').getAttribute('href').split('/')[0])"
    with Chromium() as browser:
        browser.open(gallery.as_uri())
        assert browser.evaluate("document.getElementById('shown').textContent") == "300 of 300 shown"
        assert browser.evaluate(shown_jobs) == jobs[:100], "the first page: the first 100 images as run"
        assert browser.evaluate("document.querySelector('.pager .page').textContent") == "page 1 of 3"
        # lazily: only thumbnails of this page, and of it only those near the screen, are fetched
        browser.evaluate("new Promise(done => setTimeout(done, 500))")
        fetched = {url.rsplit("/", 2)[-2] for url in browser.requested() if "/image_" in url}
        assert fetched and fetched <= {str(job) for job in jobs[:100]}
        assert len(fetched) < 100, f"{len(fetched)} images fetched: lazy loading did not hold back"
        assert browser.evaluate("+document.body.dataset.loaded") >= len(fetched) - 5

        # a filter over the whole set, then its second page: the hash keeps both
        browser.evaluate("const f = document.querySelector('select[data-key=\"sampling.guidance_scale\"]');"
                         "f.value = '1'; f.dispatchEvent(new Event('change'))")
        assert browser.evaluate("document.getElementById('shown').textContent") == "150 of 300 shown"
        browser.evaluate("document.querySelector('.pager button[data-go=\"1\"]').click()")
        wanted = [job for job in jobs if guidance[job] == 1.0]
        assert browser.evaluate(shown_jobs) == wanted[100:]
        assert browser.evaluate("location.hash") == "#sampling.guidance_scale=1&page=2"
        browser.open(gallery.as_uri() + "#sampling.guidance_scale=1&page=2")  # the URL alone restores it
        assert browser.evaluate(shown_jobs) == wanted[100:]

        # orders over the whole set: best clip_score first, and a swept parameter's values in order
        browser.open(gallery.as_uri() + "#sort=clip_score")
        best = sorted(jobs, key=lambda job: -scores[job])
        assert [scores[job] for job in browser.evaluate(shown_jobs)] == [scores[job] for job in best[:100]]
        assert browser.evaluate("location.hash") == "#sort=clip_score"
        browser.evaluate("const o = document.querySelector('select[data-sort]');"
                         "o.value = [...o.options].find(x => x.dataset.key === 'seed').value; o.dispatchEvent(new Event('change'))")
        browser.evaluate("document.querySelector('.pager button[data-go=\"1\"]').click()")
        assert browser.evaluate(shown_jobs) == sorted(jobs, key=lambda job: seeds[job])[100:200]
        assert browser.evaluate("location.hash") == "#sort=seed&page=2"
