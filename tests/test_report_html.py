"""The HTML report: self-contained, every plot present, and it renders in headless Chromium
without console errors into a screenshot that is not blank."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from anacc.runtime.report import build_report
from anacc.runtime.report_html import render_html
from PIL import Image

import anacc

MODELS = Path(__file__).resolve().parents[1] / "models"
CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)
PLOTS = ("tile-placement", "utilization", "adc-reads", "error-budget")


@pytest.fixture(scope="module")
def cnn_report():
    program = anacc.compile(
        MODELS / "digits_cnn.onnx", calib=str(MODELS / "data" / "digits_img_calib.npz")
    )
    with np.load(MODELS / "data" / "digits_img_test.npz") as npz:
        data = {k: npz[k] for k in npz.files}
    return build_report(program, data, max_samples=64)


def _groups(page: str, prefix: str) -> list[str]:
    """The ids of the SVG groups whose id starts with ``prefix``."""
    return re.findall(rf'<g id="({re.escape(prefix)}[^"]*)">', page)


def _box(page: str, gid: str) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1) of the path drawn in the group ``gid``."""
    match = re.search(rf'<g id="{re.escape(gid)}">.*?<path d="([^"]*)"', page, re.S)
    assert match, gid
    numbers = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", match.group(1))]
    xs, ys = numbers[0::2], numbers[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def test_page_is_self_contained_with_every_plot(cnn_report) -> None:
    page = render_html(cnn_report)
    for plot in PLOTS:
        assert re.search(rf'<svg id="{plot}" class="plot" role="img" aria-label="[^"]+"', page)
    assert len(_groups(page, "tile-")) == cnn_report.cost.tiles
    n_loads = cnn_report.cost.loads
    assert len(_groups(page, "half-")) == n_loads * cnn_report.chip.halves
    assert len(_groups(page, "budget-part-")) == 3 * len(cnn_report.budget)
    # Nothing is fetched: no scripts, stylesheets, images or frames from anywhere, and every
    # reference inside an SVG points at an element of the page itself.
    assert not re.search(r"<(script|link|img|iframe|object|embed)\b", page, re.I)
    assert not re.search(r'\b(src|href)\s*=\s*"(?!#)', page, re.I)
    refs = set(re.findall(r'href="#([^"]+)"', page)) | set(re.findall(r"url\(([^)]*)\)", page))
    assert refs, "the plots reference their markers and clip paths"
    for ref in refs:
        assert re.search(rf'id="{re.escape(ref.removeprefix("#"))}"', page), ref


def test_plots_are_labelled(cnn_report) -> None:
    page = render_html(cnn_report)
    plots = {
        m.group(1): m.group(0)
        for m in re.finditer(r'<svg id="([^"]+)" class="plot".*?</svg>', page, re.S)
    }
    assert set(plots) == set(PLOTS)
    expected = {
        "tile-placement": ["synapse row", "neuron (column)", "load 0, half 0"],
        "utilization": ["utilization", "all layers"],
        "adc-reads": ["ADC read", "reads (log)"],
        "error-budget": ["error power", "fixed pattern", "measured total"],
    }
    for plot, labels in expected.items():
        texts = " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", plots[plot]))
        for label in labels:
            assert label in texts, (plot, label)
    for layer in cnn_report.tiles:
        assert f">{layer}</text>" in plots["tile-placement"], layer  # the legend
        assert f"<title>{layer} copy 0 tile 0 (run 0):" in plots["tile-placement"]


def test_tiles_sit_where_the_mapping_places_them(cnn_report) -> None:
    page = render_html(cnn_report)
    chip = cnn_report.chip
    for layer_index, tiles in enumerate(cnn_report.tiles.values()):
        for t in tiles:
            hx0, hy0, hx1, hy1 = _box(page, f"half-{t.load}-{t.half}")
            x0, y0, x1, y1 = _box(page, f"tile-{t.load}-{layer_index}-{t.index}")
            width, height = hx1 - hx0, hy1 - hy0
            # the half is a columns_per_half x rows_per_half array of synapses
            assert width / height == pytest.approx(chip.columns_per_half / chip.rows_per_half)
            assert (x0 - hx0) / width == pytest.approx(
                t.col_offset / chip.columns_per_half, abs=1e-3
            )
            assert (x1 - x0) / width == pytest.approx(t.n_cols / chip.columns_per_half, abs=1e-3)
            first = t.row_offset * chip.rows_per_signed_weight  # row 0 on top
            assert (y0 - hy0) / height == pytest.approx(first / chip.rows_per_half, abs=1e-3)
            rows = t.n_rows * chip.rows_per_signed_weight
            assert (y1 - y0) / height == pytest.approx(rows / chip.rows_per_half, abs=1e-3)


def test_page_without_data_has_the_mapping_plots_only(cnn_report) -> None:
    bare = build_report(
        anacc.compile(MODELS / "digits_mlp.onnx", calib=str(MODELS / "data" / "digits_calib.npz"))
    )
    page = render_html(bare)
    assert 'id="tile-placement"' in page and 'id="utilization"' in page
    assert 'id="adc-reads"' not in page and 'id="error-budget"' not in page
    assert "Run with --data" in page


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


def _console_problems(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if "CONSOLE" in line or "Uncaught" in line or "Failed to load resource" in line
    ]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_chromium_renders_the_plots_without_console_errors(cnn_report, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(cnn_report), encoding="utf-8")
    url = page.resolve().as_uri()

    dom = _chromium(["--dump-dom", url], tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not _console_problems(dom.stderr), _console_problems(dom.stderr)
    for plot in PLOTS:
        assert re.search(rf'<svg[^>]*id="{plot}"', dom.stdout), plot
    assert len(_groups(dom.stdout, "tile-")) == cnn_report.cost.tiles
    assert len(_groups(dom.stdout, "bin-")) > 20

    shot = tmp_path / "report.png"
    result = _chromium(
        ["--hide-scrollbars", "--window-size=1100,1800", f"--screenshot={shot}", url],
        tmp_path / "profile",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not _console_problems(result.stderr), _console_problems(result.stderr)
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int32)
    assert pixels.shape[:2] == (1800, 1100)
    not_white = (pixels < 245).any(axis=2)
    assert not_white.mean() > 0.02
    colors = np.unique(pixels.reshape(-1, 3) // 16, axis=0)
    assert len(colors) > 12  # the plot colours, not only text on white
