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


def test_page_is_self_contained_with_every_plot(cnn_report) -> None:
    page = render_html(cnn_report)
    for plot in PLOTS:
        assert f'id="{plot}"' in page
    assert page.count('class="tile"') == cnn_report.cost.tiles
    n_loads = cnn_report.cost.loads
    assert page.count('class="half"') == n_loads * cnn_report.chip.halves
    assert page.count('class="budget-part"') == 3 * len(cnn_report.budget)
    # Nothing is fetched: no scripts, stylesheets, images or frames from anywhere.
    assert not re.search(r"<(script|link|img|iframe|object|embed)\b", page, re.I)
    assert not re.search(r"\b(src|href)\s*=", page, re.I)
    assert "url(#hatch)" in page and "url(http" not in page


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
    assert dom.stdout.count('class="tile"') == cnn_report.cost.tiles
    assert dom.stdout.count('class="bin"') > 20

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
