"""TensorBoard launched by tbprobe, rendered in headless Chromium (Debian `chromium`, Playwright).

Skipped where Chromium or Playwright is missing, unless `TBPROBE_REQUIRE_BROWSER=1` (CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tb_helpers
from tb_helpers import LAYERS, group_gone

import tbprobe

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def chromium() -> str:
    """Path of chromium, once Playwright imports; skip (or fail in CI) otherwise."""
    required = os.environ.get("TBPROBE_REQUIRE_BROWSER") == "1"
    missing = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "the playwright package is not installed"
    chromium = shutil.which("chromium")
    if chromium is None:
        missing = "chromium is not on the PATH (Debian package `chromium`)"
    if missing is None:
        return chromium
    if required:
        pytest.fail(f"TBPROBE_REQUIRE_BROWSER=1 but {missing}")
    pytest.skip(missing)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tb_helpers.make_runs(tmp_path_factory.getbasetemp() / "tbprobe-runs")


# `chromium` comes first in each test's arguments, so a missing browser skips before any training.


def test_page_shows_layer_groups_images_and_named_runs(chromium, runs):
    from playwright.sync_api import expect, sync_playwright

    named = {"baseline": runs["baseline"], "high_lr": runs["high_lr"]}
    with tbprobe.launch(named) as tensorboard, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(tensorboard.url + "#timeseries")
            for layer in LAYERS:  # one card group per layer in the Time Series dashboard
                group = page.locator(".group-title", has_text=layer)
                expect(group).to_have_text(layer, timeout=TIMEOUT_MS)
            for run in ("baseline/probe", "baseline/train", "high_lr/probe"):
                expect(page.get_by_text(run, exact=True).first).to_be_visible()

            page.fill('input[placeholder="Filter tags (regex)"]', "conv1/feature_maps")
            page.keyboard.press("Escape")
            # One card per run, each showing its last logged step.
            images = page.locator("img[src*='timeseries/imageData']:visible")
            expect(images).to_have_count(2, timeout=TIMEOUT_MS)
            for index in range(2):
                expect(images.nth(index)).to_have_attribute("alt", "Image at step 2")
            page.wait_for_function(
                "Array.from(document.images).every(image => image.complete)", timeout=TIMEOUT_MS
            )
            widths = images.evaluate_all("images => images.map(image => image.naturalWidth)")
            assert len(widths) == 2
            assert all(width > 0 for width in widths), widths
        finally:
            browser.close()
    assert group_gone(tensorboard.pid)


def test_screenshot_script_writes_the_page(chromium, runs, tmp_path):
    import matplotlib.image

    output = tmp_path / "docs" / "tensorboard.png"
    command = [
        sys.executable,
        str(ROOT / "scripts" / "screenshot.py"),
        f"baseline={runs['baseline']}",
        f"high_lr={runs['high_lr']}",
        "-o",
        str(output),
        "--filter",
        "conv1",
        "--width",
        "1200",
        "--height",
        "800",
        "--chromium",
        chromium,
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {output}"
    pixels = matplotlib.image.imread(output)
    assert pixels.shape[:2] == (800, 1200)
    # TensorBoard's orange header (#f57c00) across the top of the page.
    assert pixels[10, 600, :3] == pytest.approx([0xF5 / 255, 0x7C / 255, 0x00], abs=0.02)
