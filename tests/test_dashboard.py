"""Tests of `tbprobe.dashboard`: its pure helpers, its routes in a real TensorBoard started on runs
written by `tbprobe.Probe`, and its page in headless Chromium (skipped without a browser unless
`TBPROBE_REQUIRE_BROWSER=1`, as in test_browser.py)."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import matplotlib
import matplotlib.image
import numpy as np
import pytest
import tb_helpers
import test_browser
from tb_helpers import LAYERS, group_gone, read_events, served_runs

import tbprobe
from tbprobe.dashboard import data, overview
from tbprobe.events import read_run
from tbprobe.tags import SCALAR_NAMES

PROBE_RUNS = ("baseline/probe", "diagnosed/probe", "high_lr/probe")
STEPS = [0, 1, 2]
FINDING_STEP = 1
HEALTH = (
    "tbprobe found 1 problem.\n\n| rule | layer | since | evidence | hint |\n|---|---|---|---|---|\n"
    f"| dead layer | `conv1` | {FINDING_STEP} | 95% dead | lower the learning rate |"
)
chromium = test_browser.chromium  # the same fixture: a Chromium path, or skip


def test_entry_point_registers_the_plugin():
    points = importlib.metadata.entry_points(group="tensorboard_plugins")
    found = [point.value for point in points if point.name == "tbprobe"]
    assert found == ["tbprobe.dashboard.plugin:TbprobePlugin"], (
        "tbprobe's tensorboard_plugins entry point is missing: reinstall with `pip install -e .`"
    )


def test_layers_follow_the_manifest_and_prefixed_layers_come_before_their_entries():
    layers = {"head": 0, "block/call_1": 0, "block": 0, "extra": 0, "block/call_0": 0}
    order = data.order_layers(layers, ["block/call_0", "block/call_1", "head"])
    assert order == ["block", "block/call_0", "block/call_1", "head", "extra"]


def test_metrics_known_first_then_sorted():
    metrics = ["zeta", "update_ratio", "mean", "alpha", "sparsity"]
    assert data.order_metrics(metrics) == ["sparsity", "mean", "update_ratio", "alpha", "zeta"]


def test_markdown_rows_parse_the_health_table():
    assert data.markdown_rows(HEALTH) == [
        {
            "rule": "dead layer",
            "layer": "conv1",
            "since": str(FINDING_STEP),
            "evidence": "95% dead",
            "hint": "lower the learning rate",
        }
    ]


def test_float32_encoding_keeps_nan_and_infinity():
    values = np.array([[0.1, np.nan], [np.inf, -3e38]], np.float32)
    decoded = overview.decode_float32(overview.encode_float32(values))
    np.testing.assert_array_equal(decoded, values.ravel())


# --- a real TensorBoard ---------------------------------------------------------------------


def add_health(run: Path) -> None:
    """Append a `tbprobe/health` text event at `FINDING_STEP` to `run`'s probe folder."""
    import tensorflow as tf

    from tbprobe import summaries

    builder = summaries.SummaryBuilder()
    builder.string(data.HEALTH_TAG, HEALTH)
    writer = tf.summary.create_file_writer(str(run / "probe"))
    builder.write(writer, FINDING_STEP)
    writer.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """baseline and high_lr of `tb_helpers.make_runs`, and `diagnosed`: high_lr with findings."""
    made = tb_helpers.make_runs(tmp_path_factory.getbasetemp() / "tbprobe-runs")
    root = tmp_path_factory.mktemp("dashboard-runs")
    runs = {name: root / name for name in ("baseline", "high_lr", "diagnosed")}
    shutil.copytree(made["baseline"], runs["baseline"])
    shutil.copytree(made["high_lr"], runs["high_lr"])
    shutil.copytree(made["high_lr"] / "probe", runs["diagnosed"] / "probe")
    add_health(runs["diagnosed"])
    return runs


@pytest.fixture(scope="module")
def tensorboard(runs):
    with tbprobe.launch(runs) as handle:
        served_runs(handle.url, {*PROBE_RUNS, "baseline/train"})
        yield handle
    assert group_gone(handle.pid)


def get(base_url: str, route: str, params: list[tuple[str, str]]) -> tuple[int, str, bytes]:
    """GET a plugin route: (status, content type, body), 4xx included."""
    url = f"{base_url}data/plugin/tbprobe/{route}?{urllib.parse.urlencode(params)}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=60) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def get_json(base_url: str, route: str, params: list[tuple[str, str]]) -> dict:
    status, _, body = get(base_url, route, params)
    assert status == 200, body
    return json.loads(body)


def run_params(runs) -> list[tuple[str, str]]:
    return [("run", run) for run in runs]


@pytest.mark.slow
def test_plugin_listing_shows_the_tab(tensorboard):
    listing = tb_helpers.get_json(tensorboard.url, "/data/plugins_listing")["tbprobe"]
    assert listing["enabled"] is True
    assert listing["loading_mechanism"] == {
        "type": "IFRAME",
        "module_path": "/data/plugin/tbprobe/static/index.js",
    }
    assert tensorboard.dashboard_url == tensorboard.url + "#tbprobe"
    assert f'src="{tensorboard.dashboard_url}"' in tensorboard._repr_html_()


@pytest.mark.slow
def test_runs_route_lists_probe_runs_layers_metrics_and_images(tensorboard, runs):
    answer = get_json(tensorboard.url, "runs", [])
    assert sorted(answer["runs"]) == list(PROBE_RUNS)  # train/validation hold no tbprobe data
    assert answer["metrics"] == list(SCALAR_NAMES)
    for run, index in answer["runs"].items():
        written = tb_helpers.written_tags(runs[run.split("/")[0]] / "probe")
        assert index["layers"] == list(LAYERS)  # call order
        assert sorted(index["histograms"]) == sorted(LAYERS)
        images = {tag for tags in index["images"].values() for tag in tags}
        assert images == written["images"]
        assert index["health"] is True  # Probe writes tbprobe/health at its first log


@pytest.mark.slow
@pytest.mark.parametrize("metric", SCALAR_NAMES)
def test_overview_values_equal_the_logged_scalars(tensorboard, runs, metric):
    answer = get_json(tensorboard.url, "overview", [("metric", metric), *run_params(PROBE_RUNS)])
    assert answer["metric"] == metric
    for run, matrix in answer["runs"].items():
        logged = read_run(runs[run.split("/")[0]])
        assert matrix["layers"] == list(LAYERS)
        assert matrix["steps"] == STEPS
        assert matrix["missing"] == []
        values = overview.decode_float32(matrix["values"]).reshape(len(LAYERS), len(STEPS))
        for row, layer in enumerate(LAYERS):
            steps, expected = logged.scalars[layer][metric]
            assert steps.tolist() == STEPS
            np.testing.assert_array_equal(values[row], expected.astype(np.float32))


@pytest.mark.slow
def test_layer_route_serves_histograms_scalars_and_image_bytes(tensorboard, runs):
    answer = get_json(tensorboard.url, "layer", [("tag", "conv1"), *run_params(PROBE_RUNS)])
    assert answer["tag"] == "conv1"
    for run, view in answer["runs"].items():
        events = read_events(runs[run.split("/")[0]] / "probe")
        histogram = events["conv1/activations"]
        assert view["histograms"]["steps"] == histogram["steps"] == STEPS
        for rows, expected in zip(view["histograms"]["rows"], histogram["values"], strict=True):
            np.testing.assert_array_equal(np.array(rows), expected)
        for metric in SCALAR_NAMES:
            logged = events[f"conv1/{metric}"]
            assert view["scalars"][metric]["steps"] == logged["steps"]
            np.testing.assert_array_equal(
                np.float32(view["scalars"][metric]["values"]), np.float32(logged["values"])
            )
        images = view["images"]["conv1/feature_maps"]
        logged = events["conv1/feature_maps"]
        assert images["steps"] == logged["steps"]
        for keys, expected in zip(images["blobs"], logged["values"], strict=True):
            assert len(keys) == len(expected) - 2  # [width, height, png, ...]
            status, content_type, body = get(tensorboard.url, "blob", [("key", keys[0])])
            assert (status, content_type) == (200, "image/png")
            assert body == expected[2]


@pytest.mark.slow
def test_findings_route_parses_the_health_table(tensorboard):
    answer = get_json(tensorboard.url, "findings", run_params(PROBE_RUNS))
    assert sorted(answer["runs"]) == list(PROBE_RUNS)  # every Probe writes its health card
    found = answer["runs"]["diagnosed/probe"]
    assert (found["step"], found["text"]) == (FINDING_STEP, HEALTH)
    assert found["rows"] == data.markdown_rows(HEALTH)
    for run in ("baseline/probe", "high_lr/probe"):
        logged = answer["runs"][run]
        assert logged["text"].startswith("**")  # the card Probe wrote, parsed as it reads
        assert logged["rows"] == data.markdown_rows(logged["text"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("route", "params", "status", "message"),
    [
        ("overview", [("metric", "mean"), ("run", "baseline/prob")], 404, "'baseline/probe'?"),
        ("overview", [("metric", "mean"), ("run", "baseline/train")], 404, "Unknown run"),
        ("overview", [("metric", "meen"), ("run", "baseline/probe")], 404, "'mean'?"),
        ("layer", [("tag", "conv2"), ("run", "baseline/probe")], 404, "'conv1'?"),
        ("layer", [("tag", "conv1")], 400, "Missing argument `run`"),
        ("findings", [("run", "nope")], 404, "Unknown run 'nope'"),
        ("blob", [("key", "not-a-key")], 404, "No blob with key 'not-a-key'"),
        ("static/../plugin.py", [], 404, "No static file"),
    ],
)
def test_bad_requests_get_a_json_error(tensorboard, route, params, status, message):
    answer = get(tensorboard.url, route, params)
    assert answer[:2] == (status, "application/json")
    assert message in json.loads(answer[2])["error"]


# --- the page in headless Chromium ------------------------------------------------------------


def expected_color(value: float, low: float, high: float) -> np.ndarray:
    """Viridis colour (0-255) of `value` on a linear scale from `low` to `high`."""
    rgba = matplotlib.colormaps["viridis"]((value - low) / (high - low))
    return np.array(rgba[:3]) * 255


@pytest.mark.slow
def test_overview_and_layer_view_in_chromium(chromium, tensorboard, runs):
    from playwright.sync_api import expect, sync_playwright

    timeout = test_browser.TIMEOUT_MS
    logged = {run: read_run(runs[run.split("/")[0]]) for run in PROBE_RUNS}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=test_browser.CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(tensorboard.dashboard_url)
            expect(page.get_by_text("tbprobe", exact=True).first).to_be_visible(timeout=timeout)
            frame = page.frame_locator("iframe")
            overview = frame.locator(".overview[data-painted=true]")
            expect(overview).to_have_attribute("data-metric", "sparsity", timeout=timeout)

            # One heatmap per run: a row per output, a column per logged step, viridis colours
            # on one linear scale over every run's values.
            values = np.array(
                [[logged[r].scalars[layer]["sparsity"][1] for layer in LAYERS] for r in PROBE_RUNS],
                np.float32,
            )
            low, high = float(values.min()), float(values.max())
            for index, run in enumerate(PROBE_RUNS):
                canvas = frame.locator(f"canvas[data-run='{run}']")
                shape = canvas.evaluate("c => [+c.dataset.rows, +c.dataset.cols]")
                assert shape == [len(LAYERS), len(STEPS)]
                assert float(canvas.get_attribute("data-vmin")) == pytest.approx(low)
                assert float(canvas.get_attribute("data-vmax")) == pytest.approx(high)
                pixels = np.array(
                    canvas.evaluate(
                        """c => { const w = +c.dataset.cellWidth, h = +c.dataset.cellHeight;
                      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                      const out = [];
                      for (let r = 0; r < +c.dataset.rows; r++) for (let k = 0; k < +c.dataset.cols; k++) {
                        const i = 4 * ((r * h + (h >> 1)) * c.width + k * w + (w >> 1));
                        out.push([d[i], d[i + 1], d[i + 2]]);
                      } return out; }"""
                    )
                ).reshape(len(LAYERS), len(STEPS), 3)
                for row in range(len(LAYERS)):
                    for column in range(len(STEPS)):
                        expected = expected_color(values[index, row, column], low, high)
                        np.testing.assert_allclose(pixels[row, column], expected, atol=5)

            # Switching metric repaints with the new metric.
            frame.locator(".select-metric").select_option("mean")
            expect(overview).to_have_attribute("data-metric", "mean", timeout=timeout)

            # Difference from baseline: the other runs on a scale symmetric around zero.
            frame.locator(".select-compare").select_option("baseline/probe")
            canvases = frame.locator(".overview[data-painted=true] .heatmap canvas")
            expect(canvases).to_have_count(len(PROBE_RUNS) - 1, timeout=timeout)
            means = {
                r: np.array([logged[r].scalars[layer]["mean"][1] for layer in LAYERS], np.float32)
                for r in PROBE_RUNS
            }
            largest = max(np.abs(means[r] - means["baseline/probe"]).max() for r in PROBE_RUNS)
            for attribute, expected in (("data-vmin", -largest), ("data-vmax", largest)):
                value = float(canvases.first.get_attribute(attribute))
                assert value == pytest.approx(float(expected), rel=1e-5)
            frame.locator(".select-compare").select_option("")
            expect(canvases).to_have_count(len(PROBE_RUNS), timeout=timeout)

            # A click on high_lr's conv1 cell at step 1 opens conv1 at step 1.
            canvas = frame.locator("canvas[data-run='high_lr/probe']")
            width, height = canvas.evaluate("c => [+c.dataset.cellWidth, +c.dataset.cellHeight]")
            row, column = LAYERS.index("conv1"), STEPS.index(1)
            canvas.click(position={"x": column * width + width / 2, "y": row * height + 2})
            view = frame.locator(".layer-view")
            expect(view).to_have_attribute("data-tag", "conv1", timeout=timeout)
            expect(view).to_have_attribute("data-step", "1")
            chart = frame.locator(".histogram-chart")
            expect(chart).to_have_attribute("data-series", str(len(PROBE_RUNS)))
            images = frame.locator(".image-row img")
            expect(images).to_have_count(len(PROBE_RUNS), timeout=timeout)
            widths = images.evaluate_all(
                "all => Promise.all(all.map(i => i.decode().then(() => [i.dataset.run, i.naturalWidth])))"
            )
            assert sorted(run for run, width in widths if width > 0) == list(PROBE_RUNS)

            frame.locator(".histogram-mode").select_option("ridgeline")
            expect(chart).to_have_attribute("data-series", str(len(PROBE_RUNS)))

            # The finding links into the layer view at its step.
            frame.locator(".back").click()
            frame.locator(".finding-link", has_text="conv1").click()
            expect(view).to_have_attribute("data-step", str(FINDING_STEP), timeout=timeout)
        finally:
            browser.close()


@pytest.mark.slow
def test_screenshot_script_shoots_the_overview_and_a_layer(chromium, runs, tmp_path):
    overview_png, layer_png = tmp_path / "overview.png", tmp_path / "layer.png"
    command = [
        sys.executable,
        str(test_browser.ROOT / "scripts" / "screenshot.py"),
        *(f"{name}={path}" for name, path in runs.items()),
        "--dashboard",
        "-o",
        str(overview_png),
        "--layer",
        "conv1",
        "--layer-output",
        str(layer_png),
        "--width",
        "1000",
        "--height",
        "700",
        "--settle-ms",
        "200",
        "--chromium",
        chromium,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["wrote", str(overview_png), "wrote", str(layer_png)]
    for path in (overview_png, layer_png):
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[:2] == (700, 1000)
    assert not np.array_equal(matplotlib.image.imread(overview_png), pixels)
