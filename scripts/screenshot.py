"""Screenshot TensorBoard showing tbprobe runs, in headless Chromium (for the README).

Usage::

    .venv/bin/python scripts/screenshot.py baseline=runs/a high_lr=runs/b \\
        -o docs/tensorboard.png --filter conv1

Runs are given as to ``tbprobe launch`` (a run, a folder of runs, or NAME=PATH). The script
starts TensorBoard with `tbprobe.launch`, opens its Time Series dashboard in the Debian
``chromium`` (never a downloaded browser) through Playwright, closes the settings pane, types
``--filter`` into the tag filter so that one layer's cards fill the page, waits for the cards to
render, saves the PNG and stops Chromium and TensorBoard.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

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
    from playwright.sync_api import sync_playwright

    executable = chromium or shutil.which("chromium")
    if executable is None:
        raise FileNotFoundError(
            "No chromium on the PATH. Install the Debian package `chromium` or pass --chromium."
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
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
    args = parser.parse_args(argv)
    try:
        with tbprobe.launch(*args.runs, port=args.port) as tensorboard:
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
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
