"""Screenshot TensorBoard showing tbprobe runs, in headless Chromium (for the README).

Usage::

    .venv/bin/python scripts/screenshot.py baseline=runs/a high_lr=runs/b \\
        -o docs/tensorboard.png --filter conv1
    .venv/bin/python scripts/screenshot.py baseline=runs/a high_lr=runs/b --dashboard \\
        -o docs/dashboard_overview.png --layer conv2 --layer-output docs/dashboard_layer.png

Runs are given as to ``tbprobe launch`` (a run, a folder of runs, or NAME=PATH). The script
starts TensorBoard with `tbprobe.launch`, opens its Time Series dashboard in the Debian
``chromium`` (never a downloaded browser) through Playwright, closes the settings pane, types
``--filter`` into the tag filter so that one layer's cards fill the page, waits for the cards to
render, saves the PNG and stops Chromium and TensorBoard. With ``--dashboard`` it opens the
tbprobe tab instead: the overview once every heatmap is painted, and with ``--layer`` also that
layer's view (histograms overlaid, scalars, images) into ``--layer-output``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a checkout, not installed

import tbprobe

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
RENDER_TIMEOUT_MS = 60_000
TAG_FILTER = 'input[placeholder="Filter tags (regex)"]'
CLOSE_SETTINGS = 'button[aria-label="Close side pane"]'
PAINTED_OVERVIEW = ".overview[data-painted=true]"


def take_screenshot(
    url: str,
    output: Path,
    *,
    tag_filter: str | None = None,
    width: int = 1400,
    height: int = 900,
    settle_ms: int = 2000,
    chromium: str | None = None,
) -> None:
    """Save a PNG of TensorBoard's Time Series dashboard at `url`.

    Args:
        url: TensorBoard's address, e.g. ``http://localhost:6006/``.
        output: PNG file to write (its folder is created).
        tag_filter: Regex typed into the tag filter, e.g. a layer name; None shows all groups.
        width: Viewport width in pixels.
        height: Viewport height in pixels.
        settle_ms: Extra wait once data has loaded, for charts drawn off the main thread.
        chromium: Chromium executable; default: ``chromium`` on the PATH.

    Raises:
        FileNotFoundError: No Chromium executable.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    with _browser_page(chromium, width, height) as page:
        page.goto(url.rstrip("/") + "/#timeseries")
        page.locator(".group-title").first.wait_for(timeout=RENDER_TIMEOUT_MS)
        if page.locator(CLOSE_SETTINGS).is_visible():
            page.locator(CLOSE_SETTINGS).click()
        if tag_filter:
            page.fill(TAG_FILTER, tag_filter)
            page.keyboard.press("Escape")  # close the tag suggestions over the cards
        page.wait_for_load_state("networkidle", timeout=RENDER_TIMEOUT_MS)
        page.wait_for_function(
            "Array.from(document.images).every(image => image.complete)",
            timeout=RENDER_TIMEOUT_MS,
        )
        page.wait_for_timeout(settle_ms)
        page.screenshot(path=str(output))


def take_dashboard_screenshots(
    url: str,
    output: Path,
    *,
    layer: str | None = None,
    layer_output: Path | None = None,
    width: int = 1400,
    height: int = 900,
    settle_ms: int = 1000,
    chromium: str | None = None,
) -> None:
    """Save PNGs of the tbprobe tab at `url`: its overview, and the view of `layer`.

    Args:
        url: The tab's address, e.g. ``http://localhost:6006/#tbprobe``.
        output: PNG of the overview.
        layer: Probed output whose layer view goes into `layer_output` (opened at its last
            step by a click on its row's last cell); None takes no second shot.
        layer_output: PNG of the layer view.
        width: Viewport width in pixels.
        height: Viewport height in pixels.
        settle_ms: Extra wait for the images to decode before each shot.
        chromium: Chromium executable; default: ``chromium`` on the PATH.

    Raises:
        FileNotFoundError: No Chromium executable.
        ValueError: `layer` without `layer_output`, or no heatmap row shows `layer`.
    """
    if layer is not None and layer_output is None:
        raise ValueError("Invalid arguments. Received: a layer without --layer-output.")
    with _browser_page(chromium, width, height) as page:
        page.goto(url)
        frame = page.frame_locator("iframe")
        frame.locator(PAINTED_OVERVIEW).wait_for(timeout=RENDER_TIMEOUT_MS)
        page.wait_for_timeout(settle_ms)
        output.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(output))
        if layer is None:
            return
        labels = frame.locator(".labels .label").all_text_contents()
        if layer not in labels:
            raise ValueError(f"No heatmap row shows layer {layer!r}. Rows: {labels}")
        canvas = frame.locator(".heatmap canvas").first
        cell = canvas.evaluate("c => [+c.dataset.cellWidth, +c.dataset.cellHeight, c.width]")
        row = labels.index(layer)
        canvas.click(position={"x": cell[2] - cell[0] / 2, "y": row * cell[1] + cell[1] / 2})
        frame.locator(".histogram-chart").wait_for(timeout=RENDER_TIMEOUT_MS)
        page.wait_for_load_state("networkidle", timeout=RENDER_TIMEOUT_MS)
        page.wait_for_timeout(settle_ms)
        layer_output.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(layer_output))


@contextlib.contextmanager
def _browser_page(chromium: str | None, width: int, height: int) -> Iterator[Any]:
    """A page of a headless Chromium (the Debian one, never a download), closed afterwards."""
    from playwright.sync_api import sync_playwright

    executable = chromium or shutil.which("chromium")
    if executable is None:
        raise FileNotFoundError(
            "No chromium on the PATH. Install the Debian package `chromium` or pass --chromium."
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    """Run the script with `argv` (default: `sys.argv[1:]`); return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="as for `tbprobe launch`")
    parser.add_argument("-o", "--output", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--filter", help="tag filter regex, e.g. a layer name")
    parser.add_argument("--width", type=int, default=1400, help="viewport width (px)")
    parser.add_argument("--height", type=int, default=900, help="viewport height (px)")
    parser.add_argument("--settle-ms", type=int, default=2000, help="extra wait before the shot")
    parser.add_argument("--chromium", help="Chromium executable (default: chromium on PATH)")
    parser.add_argument("--port", type=int, help="TensorBoard port (default: first free)")
    parser.add_argument(
        "--dashboard", action="store_true", help="shoot the tbprobe tab's overview instead"
    )
    parser.add_argument("--layer", help="with --dashboard: also shoot this layer's view")
    parser.add_argument("--layer-output", type=Path, help="PNG file of the layer view")
    args = parser.parse_args(argv)
    try:
        with tbprobe.launch(*args.runs, port=args.port) as tensorboard:
            if args.dashboard:
                take_dashboard_screenshots(
                    tensorboard.dashboard_url,
                    args.output,
                    layer=args.layer,
                    layer_output=args.layer_output,
                    width=args.width,
                    height=args.height,
                    settle_ms=args.settle_ms,
                    chromium=args.chromium,
                )
            else:
                take_screenshot(
                    tensorboard.url,
                    args.output,
                    tag_filter=args.filter,
                    width=args.width,
                    height=args.height,
                    settle_ms=args.settle_ms,
                    chromium=args.chromium,
                )
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        print(f"screenshot: error: {error}", file=sys.stderr)
        return 2
    for path in (args.output, args.layer_output if args.dashboard and args.layer else None):
        if path is not None:
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
