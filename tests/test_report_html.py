"""report.html (evaluate.reports.html_report): one self-contained page beside report.md, checked in process, and
loaded in a real headless Chromium where one is installed (.ci/run installs Debian's).

The run with flips is the bundled digits model with two head rows swapped (tests/evalkit.swap_head_classes),
evaluated against the original checkpoint and against a baseline run of the unmodified model: every image the
original predicts as one of the two classes flips, against the original and against the baseline.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from evaluate.api import evaluate_model
from evaluate.default import CHECKPOINT, DATA
from evaluate.reports import charts
from evaluate.reports.html_report import SHOWN, THUMB, report_html
from evalkit import swap_head_classes

SWAP = (3, 8)
SUBSET = 120
CPU = dict(accelerator="cpu", num_workers=0, batch_size=32)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOSTILE = '<script>alert("x")</script> & <img src=http://example.com/x.png>'


@pytest.fixture(scope="module")
def flipped_run(digits, tmp_path_factory):
    """(output folder, result) of the swapped model against the original and a baseline of the unmodified one."""
    runs = tmp_path_factory.mktemp("html-runs")
    swapped = swap_head_classes(digits, runs / "swapped", *SWAP)
    evaluate_model(model=digits, data=DATA, subset=SUBSET, output=runs / "base", **CPU)
    result = evaluate_model(model=swapped, reference=CHECKPOINT, data=DATA, subset=SUBSET, output=runs / "out",
                            baseline=runs / "base", **CPU)
    return runs / "out", result


class _Loads(HTMLParser):
    """Collects what would make a browser fetch something or run code: a script, frame, object or stylesheet link,
    an event handler, and any src/href/style that names something other than a data: URI or a fragment."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "iframe", "object", "embed", "link", "base", "frame"):
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            value = (value or "").strip()
            if name.startswith("on"):
                self.found.append(f"{tag} {name}")
            if (name in ("src", "href", "xlink:href", "srcset", "action", "data", "poster")
                    and not value.startswith(("data:", "#"))):
                self.found.append(f"{tag} {name}={value}")
            if name == "style" and re.search(r"url\(|@import", value):
                self.found.append(f"{tag} style={value}")

    def handle_data(self, data):
        if self.lasttag == "style" and re.search(r"url\(|@import", data):
            self.found.append("a stylesheet that loads")


def loads_nothing(page: str) -> list[str]:
    """Everything in the page that would make a browser fetch something or run a script (none: [])."""
    parser = _Loads()
    parser.feed(page)
    return parser.found


def thumbnails(page: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(b64)))
            for b64 in re.findall(r'<img class="thumb" src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', page)]


def test_report_html_shows_the_run_and_loads_nothing(flipped_run):
    out, result = flipped_run
    page = (out / "report.html").read_text(encoding="utf-8")
    record = result.record
    assert loads_nothing(page) == []
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # the verdict and every check with its status and detail
    assert f"GATE: {record['gate'].upper()}" in page and record["gate"] == "fail"
    for check in record["checks"]:
        assert re.search(rf"<td>{re.escape(check['name'])}</td><td><span[^>]*>{re.escape(check['status'])}</span>",
                         page), check["name"]
    # the two figures, inline SVG: a bar per class for each row (converted, original), a point per image
    figures = {f: re.search(rf'<div class="figure" id="{f}"><svg.*?</svg>', page, re.S).group(0)
               for f in ("per-class", "probability")}
    for colour in charts.COLOURS[:2]:
        assert len(re.findall(rf"fill: ?{colour}", figures["per-class"])) >= 10, colour
    assert len(re.findall(r'<use xlink:href="#m', figures["probability"])) >= SUBSET
    # the images whose top-1 changed against the original: all named, each with a thumbnail
    differs = record["top1_differs"]
    assert 0 < len(differs) < SUBSET
    assert f"{len(differs)} image(s) whose top-1 differs between converted and original" in page
    flips = record["baseline"]["flipped"]
    assert flips and f"{len(flips)} image(s) changed their top-1" in page
    thumbs = thumbnails(page)
    assert len(thumbs) == min(len(differs), SHOWN) + min(len(flips), SHOWN)
    assert all(max(t.size) <= THUMB for t in thumbs)
    assert all(len(set(t.convert("L").tobytes())) > 5 for t in thumbs)  # a picture, not a blank square
    # both predictions of a flipped image: the swap maps 3 <-> 8
    first = flips[0]
    row = re.search(rf"<td>{re.escape(first['image_id'])}</td>(.*?)</tr>", page).group(1)
    assert [int(c) for c in re.findall(r"<td>(\d+)", row)][1:] == [first["baseline_top1"], first["top1"]]
    assert {first["baseline_top1"], first["top1"]} == set(SWAP)
    # the provenance from report.json
    assert record["provenance"]["weights"]["sha256"] in page and "versions.torch" in page


def fake_run(n: int = 12):
    """A run as report_texts gets it, with hostile class names and image ids, and flips against the original."""
    from types import SimpleNamespace

    names = [HOSTILE, "tench", "goldfish"]
    rows = [(i, i % 3, {"converted": [(i + (i % 4 == 0)) % 3, 1, 2], "original": [i % 3, 1, 2]}) for i in range(n)]
    models = {m: SimpleNamespace(per_class=[50.0, 75.0, 100.0]) for m in ("converted", "original")}
    probs = {i: {"converted": 0.5 + i / 50, "original": 0.5 + i / 40} for i in range(n)}
    record = {"model": f"model {HOSTILE}", "gate": "fail", "num_samples": n,
              "checks": [{"name": "agreement", "status": "fail", "detail": HOSTILE, "resolution": ""}],
              "models": [], "provenance": {"command": f"python -m evaluate --data '{HOSTILE}'"}}
    image_ids = [f"{HOSTILE}-{i}.png" for i in range(n)]
    return record, {"models": models, "rows": rows, "top1_prob": probs}, image_ids, names


def test_every_user_string_is_escaped_and_unreadable_images_leave_no_thumbnail():
    record, results, image_ids, names = fake_run()

    def read_image(idx):
        if idx == 0:
            raise OSError("gone")
        return Image.new("RGB", (200, 100), (idx * 20, 40, 90))

    page = report_html(record, results, image_ids, "converted", "original", names, read_image)
    assert HOSTILE not in page and "<script" not in page and loads_nothing(page) == []
    assert page.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") >= 5  # title, check, ids, class, command
    assert "unreadable" in page and [t.size for t in thumbnails(page)] == [(THUMB, THUMB // 2)] * 2


def test_many_flips_show_the_first_ones_and_say_how_many_more():
    record, results, image_ids, names = fake_run(n=4 * (SHOWN + 10))
    page = report_html(record, results, image_ids, "converted", "original", names, lambda idx: Image.new("L", (8, 8)))
    assert len(thumbnails(page)) == SHOWN and "... and 10 more" in page


def test_many_points_are_drawn_as_one_picture():
    """A large run's scatter is one embedded PNG, not one SVG element per image."""
    n = charts.RASTERIZE_ABOVE + 1
    rows = [(i, 0, {"converted": [0], "original": [0]}) for i in range(n)]
    svg = charts.probability_scatter(rows, {i: {"converted": 0.5, "original": 0.5 + i / (3 * n)} for i in range(n)},
                                     "original")
    assert svg.count("data:image/png;base64,") == 1 and len(svg) < 200_000


def test_chromium_loads_the_page_without_errors_and_shows_the_figures(flipped_run, tmp_path):
    # never skipped: a browser test that does not run proves nothing (.ci/run installs Debian's chromium)
    assert CHROMIUM is not None, "no chromium on PATH: install Debian's chromium (apt-get install chromium)"
    out, _ = flipped_run
    shot = tmp_path / "shot.png"
    ran = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
                          f"--screenshot={shot}", "--window-size=1200,2400", (out / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    console = [line for line in ran.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line
               or "Refused to" in line or "net::ERR" in line]
    assert ran.returncode == 0 and shot.is_file(), ran.stderr[-3000:]
    assert console == []
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 2400)
    pixels = list(zip(*[iter(img.tobytes())] * 3))
    assert len(set(pixels)) > 300  # text, tables, figures: not a blank page

    def near(colour: str) -> int:
        rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
        return sum(all(abs(a - b) < 24 for a, b in zip(p, rgb)) for p in pixels)

    assert near(charts.COLOURS[0]) > 2000  # the per-class bars
    assert near(charts.FLIP_COLOUR) > 30  # the scatter's flipped images


def test_a_job_of_two_models_gets_one_section_each(digits, flipped_run, tmp_path):
    swapped = flipped_run[0].parent / "swapped"
    out = tmp_path / "job"
    result = evaluate_model(model=[digits, swapped], data=DATA, subset=40, output=out, **CPU)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert re.findall(r"<section><h2>(.*?)</h2>", page) == list(result.names) and len(result.names) == 2
    assert page.count('<div class="figure" id="per-class">') == 2 and loads_nothing(page) == []
