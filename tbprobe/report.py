"""`tbprobe report`: a static HTML page with PNG figures comparing the probe logs of runs.

`write_report(runs, out_dir)` reads each run's `probe/` event files (`tbprobe.events`), runs
given and named as `tbprobe launch` takes and names them (`tbprobe.runs`), and writes
`out_dir/index.html` and `out_dir/figures/*.png`:

* per metric (sparsity, dead units, mean, std, non-finite), one line per layer over steps, one
  subplot per run on a shared y axis, one color per layer in every run. Beyond `max_layers`
  layers, the most telling ones are drawn in color with a legend (the highest last value for
  sparsity, dead units and non-finite; the widest range over steps for mean and std), the
  others in thin gray, and the caption says so;
* per layer, the last `activations` histogram of every run overlaid (densities as step
  outlines), which TensorBoard, showing one card per run, cannot do;
* a table of each layer's last values per run, with the cells of mostly dead layers
  (`dead_units >= dead_threshold`) and of layers with non-finite values (`nonfinite > 0`)
  carrying the CSS classes `dead` and `nonfinite`, and their rows the class `flagged`.

Partial logs are reported as they are: layers with fewer steps, runs missing layers, and the
truncated or corrupt event files listed under each run. matplotlib is imported only when
figures are drawn (and without pyplot, so no backend is switched), which keeps `tbprobe --help`
fast.
"""

from __future__ import annotations

import argparse
import html
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from tbprobe.events import RunData, read_run
from tbprobe.runs import PROBE_RUNS, check_distinct_names, parse_run_arguments

DEFAULT_METRICS = ("sparsity", "dead_units", "mean", "std", "nonfinite")
DEFAULT_DEAD_THRESHOLD = 0.5
DEFAULT_MAX_LAYERS = 20
LOG_SCALE_RATIO = 30.0  # histogram densities use a log axis when max / median exceeds this
HIGH_IS_BAD = frozenset({"sparsity", "dead_units", "nonfinite"})
_LINESTYLES = ("-", "--", ":", "-.")
_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { text-align: center; }
td.layer { text-align: left; font-family: monospace; }
tr.flagged td.layer { font-weight: bold; }
td.dead { background: #ffcf87; }
td.nonfinite { background: #ff8a8a; font-weight: bold; }
td.missing { color: #999; }
.problem { color: #b00; }
img { max-width: 100%; }
figure { margin: 0.5em 0 1.5em; }
colgroup.run { border-left: 2px solid #555; }
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of `tbprobe report` to `parser`."""
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_OR_PARENT",
        help="a run folder (holding probe/), a folder with runs below it, or NAME=PATH",
    )
    parser.add_argument("-o", "--out", required=True, help="output folder for index.html")
    parser.add_argument(
        "--dead-threshold",
        type=float,
        default=DEFAULT_DEAD_THRESHOLD,
        help="flag layers whose dead-unit fraction is at least this (default %(default)s)",
    )
    parser.add_argument(
        "--max-layers",
        type=int,
        default=DEFAULT_MAX_LAYERS,
        help="layers drawn in color per metric plot; the rest in gray (default %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    """Run `tbprobe report`; return 0, or print the error and return 2 for bad input (1 when
    the output cannot be written)."""
    try:
        index = write_report(
            args.runs, args.out, dead_threshold=args.dead_threshold, max_layers=args.max_layers
        )
    except ValueError as error:
        print(f"tbprobe report: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. an output folder that cannot be written
        print(f"tbprobe report: error: {error}", file=sys.stderr)
        return 1
    print(f"Wrote {index}")
    return 0


def write_report(
    runs: Sequence[str | os.PathLike | RunData] | Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    dead_threshold: float = DEFAULT_DEAD_THRESHOLD,
    max_layers: int = DEFAULT_MAX_LAYERS,
    metrics: Sequence[str] = DEFAULT_METRICS,
    title: str = "tbprobe report",
) -> Path:
    """Write the comparison report of `runs` into `out_dir`.

    Args:
        runs: run folders, parents of runs, `NAME=PATH` strings or `RunData`; or a mapping of
            name to path. Runs below a parent are all included.
        out_dir: output folder, created if needed; `index.html` and the figures in
            `figures/` are replaced.
        dead_threshold: flag a layer whose last dead-unit fraction is at least this, in [0, 1].
        max_layers: layers drawn in color (and in the legend) per metric plot, at least 1.
        metrics: scalar metrics to plot and tabulate.
        title: heading of the page.

    Returns:
        The path of `index.html`.

    Raises:
        ValueError: a path does not exist or holds no tbprobe data, or an argument is invalid.

    Example:
        >>> write_report(["base=runs/a", "lr1=runs/b"], "report")  # doctest: +SKIP
        PosixPath('report/index.html')
    """
    if not 0.0 <= dead_threshold <= 1.0:
        raise ValueError(
            f"Invalid value for argument `dead_threshold`. Received: {dead_threshold!r}. "
            "Expected a fraction in [0, 1], e.g. 0.5."
        )
    if isinstance(max_layers, bool) or not isinstance(max_layers, int) or max_layers < 1:
        raise ValueError(
            f"Invalid value for argument `max_layers`. Received: {max_layers!r}. "
            "Expected a positive integer, e.g. 20."
        )
    if isinstance(metrics, str) or not metrics:
        raise ValueError(
            f"Invalid value for argument `metrics`. Received: {metrics!r}. Expected a "
            f"non-empty list of scalar names, e.g. {list(DEFAULT_METRICS)}."
        )
    data = _load(runs)
    if all(r.empty for r in data):
        listing = ", ".join(f"{r.name} ({r.path})" for r in data)
        raise ValueError(
            f"No tbprobe data in {listing}: their probe/ event files hold no `<layer>/<metric>` "
            "scalars or histograms. Expected runs written by tbprobe.Probe or ProbeCallback."
        )
    out = Path(out_dir)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for stale in [*figures.glob("metric-*.png"), *figures.glob("hist-*.png")]:
        stale.unlink()  # from an earlier report into the same folder
    layers = list(dict.fromkeys(layer for r in data for layer in r.layers))
    body = [f"<h1>{_e(title)}</h1>", _runs_section(data), "<h2>Last values</h2>"]
    body.append(_table(data, layers, metrics, dead_threshold))
    body.append("<h2>Metrics over steps</h2>")
    for metric in metrics:
        name = f"metric-{metric}.png"
        flag = dead_threshold if metric == "dead_units" else None
        drawn, caption = _metric_figure(data, metric, layers, figures / name, max_layers, flag)
        body.append(f"<h3>{_e(metric)}</h3>")
        body.append(
            _figure(f"figures/{name}", metric, caption) if drawn else f"<p>{_e(caption)}</p>"
        )
    body.append("<h2>Last activation histograms</h2>")
    body.extend(_histogram_section(data, layers, figures))
    index = out / "index.html"
    page = "\n".join(body)
    index.write_text(
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{_CSS}</style></head>\n<body>\n{page}\n</body></html>\n",
        encoding="utf-8",
    )
    return index


def _load(runs: Any) -> list[RunData]:
    """The runs to report, in the order given; path arguments named as the launcher names them."""
    if isinstance(runs, (str, os.PathLike)) or not runs:
        raise ValueError(
            f"Invalid value for argument `runs`. Received: {runs!r}. Expected a non-empty "
            "list of run folders, parents of runs or NAME=PATH strings."
        )
    items = [runs] if isinstance(runs, Mapping) else list(runs)
    # Path arguments are parsed together, so that they are named as by the launcher (a folder
    # of runs given alone adds no prefix), then read in the order of the items they came from.
    paths = [item for item in items if not isinstance(item, RunData)]
    arguments = iter(parse_run_arguments(*paths, layout=PROBE_RUNS) if paths else [])
    data: list[RunData] = []
    for item in items:
        if isinstance(item, RunData):
            data.append(item)
            continue
        for argument in islice(arguments, len(item) if isinstance(item, Mapping) else 1):
            data.extend(read_run(path, name) for name, path in argument.runs(PROBE_RUNS))
    check_distinct_names((r.name, str(r.path)) for r in data)
    return data


def _last(series: tuple[np.ndarray, np.ndarray] | None) -> tuple[int, float] | None:
    return None if series is None or not len(series[0]) else (int(series[0][-1]), series[1][-1])


def _telling_layers(runs: list[RunData], metric: str, layers: list[str], count: int) -> list[str]:
    """The `count` layers of `layers` worth a color: with the highest last value (finite, in
    any run) of a metric where high is bad, else with the widest range over steps; in order."""

    def score(layer: str) -> float:
        scores = [-math.inf]
        for r in runs:
            _, values = r.scalars.get(layer, {}).get(metric, (None, np.zeros(0)))
            values = values[np.isfinite(values)]
            if values.size:
                high = metric in HIGH_IS_BAD
                scores.append(values[-1] if high else values.max() - values.min())
        return max(scores)

    top = set(sorted(layers, key=score, reverse=True)[:count])
    return [layer for layer in layers if layer in top]


def _metric_figure(
    runs: list[RunData],
    metric: str,
    layers: list[str],
    path: Path,
    max_layers: int,
    flag: float | None = None,
) -> tuple[bool, str]:
    """Draw the metric's lines (and the `flag` level, if any) into `path`; return whether it
    was drawn, and the caption."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    logged = [la for la in layers if any(metric in r.scalars.get(la, {}) for r in runs)]
    if not logged:
        return False, f"No run logged {metric}."
    values = [
        r.scalars[la][metric][1] for r in runs for la in logged if metric in r.scalars.get(la, {})
    ]
    if not np.any(np.concatenate(values)):
        return False, f"{metric} is 0 for every layer of every run at every step: nothing to plot."
    shown = _telling_layers(runs, metric, logged, max_layers)
    caption = f"{len(logged)} layers."
    if len(shown) < len(logged):
        rule = "highest last value" if metric in HIGH_IS_BAD else "widest range over steps"
        caption = (
            f"{len(shown)} of {len(logged)} layers in color (the {rule} in any run); "
            f"the other {len(logged) - len(shown)} in gray."
        )
    columns = min(len(runs), 3)
    rows = math.ceil(len(runs) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.0 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, sharey=True, squeeze=False).ravel()
    colors = figure_colors(len(shown))
    handles = {}
    for ax, r in zip(axes, runs, strict=False):
        ax.set_title(r.name, fontsize=10)
        ax.set_xlabel("step")
        for la in logged:
            if metric not in r.scalars.get(la, {}):
                continue
            steps, vals = r.scalars[la][metric]
            marker = "o" if len(steps) == 1 else None
            if la in shown:
                i = shown.index(la)
                style = {
                    "color": colors[i % len(colors)],
                    "linestyle": _LINESTYLES[i // len(colors) % 4],
                }
                (handles[la],) = ax.plot(steps, vals, marker=marker, ms=3, lw=1.5, **style)
            else:
                ax.plot(steps, vals, marker=marker, ms=2, color="0.82", lw=0.5, zorder=0)
        if not ax.lines:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        elif flag is not None:
            ax.axhline(flag, color="red", lw=0.8, ls="--", zorder=1)
    for ax in axes[: len(runs)]:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    for ax in axes[len(runs) :]:
        ax.set_visible(False)
    axes[0].set_ylabel(metric)
    order = [la for la in shown if la in handles]
    figure.legend(
        [handles[la] for la in order],
        order,
        loc="outside right upper",
        fontsize=8 if len(order) <= 12 else 6.5,
        ncols=1 if len(order) <= 30 else 2,
    )
    figure.savefig(path, dpi=90)
    return True, caption


def figure_colors(count: int) -> list[Any]:
    """Up to `count` distinct colors: tab10's up to 10, else tab20's; never their grays, which
    are kept for the layers drawn as background. Callers cycle them with line styles."""
    import matplotlib

    table = matplotlib.colormaps["tab10" if count <= 9 else "tab20"]
    colors = [table(i) for i in range(table.N) if not np.allclose(table(i)[:3], table(i)[0])]
    return colors[:count]


def _histogram_section(runs: list[RunData], layers: list[str], folder: Path) -> list[str]:
    """One figure per layer overlaying each run's last histogram; the HTML that shows them."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    # One figure, cleared per layer, with fixed margins: a fresh constrained-layout figure per
    # layer costs about twice as much, which adds up to minutes for ResNet50's 176 layers.
    figure = Figure(figsize=(6.0, 2.8))
    colors = figure_colors(len(runs))
    html_parts = []
    for i, layer in enumerate(layers):
        html_parts.append(f'<h3 id="layer-{i}">{_e(layer)}</h3>')
        if not any(layer in r.histograms for r in runs):
            html_parts.append("<p>No run logged an activation histogram for this layer.</p>")
            continue
        figure.clear()
        figure.subplots_adjust(left=0.14, right=0.98, bottom=0.17, top=0.9)
        ax = figure.add_subplot()
        notes = []
        for k, r in enumerate(runs):
            color = colors[k % len(colors)]
            width = 2.6 - k / max(len(runs) - 1, 1)  # earlier runs wider: equal ones stay visible
            step, rows = r.histograms.get(layer, (None, np.zeros((0, 3))))
            left, right, counts = rows[:, 0], rows[:, 1], rows[:, 2]
            label = f"{r.name} (step {step})"
            if step is None:
                notes.append(f"{r.name}: not logged")
            elif counts.sum() <= 0:
                notes.append(f"{r.name}: no finite value at step {step}")
            elif np.all(right <= left):  # a single distinct value
                ax.axvline(right[-1], color=color, lw=2, label=f"{label}: all {right[-1]:.4g}")
            else:
                widths = np.where(right > left, right - left, np.nan)
                density = counts / counts.sum() / widths
                ax.stairs(density, np.append(left, right[-1]), color=color, lw=width, label=label)
        ax.set_title(layer, fontsize=9)
        ax.set_xlabel("activation")
        ax.set_ylabel("density")
        heights = [p.get_data().values for p in ax.patches]
        heights = np.concatenate(heights) if heights else np.zeros(0)
        heights = heights[np.isfinite(heights) & (heights > 0)]
        if heights.size and heights.max() > LOG_SCALE_RATIO * np.median(heights):
            ax.set_yscale("log")  # else a spike (the zeros of a ReLU) flattens everything else
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # no mathtext
            ax.set_ylabel("density (log)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        name = f"hist-{i:03d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', layer)}.png"
        figure.savefig(folder / name, dpi=90)
        html_parts.append(_figure(f"figures/{name}", layer, "; ".join(notes)))
    return html_parts


def _runs_section(runs: list[RunData]) -> str:
    items = []
    for r in runs:
        steps = [s for m in r.scalars.values() for s, _ in m.values() if len(s)]
        span = f"steps {min(s[0] for s in steps)}-{max(s[-1] for s in steps)}" if steps else ""
        text = f"<b>{_e(r.name)}</b>: {_e(str(r.path))}, {len(r.layers)} layer(s), {span}"
        if r.empty:
            text += ' <span class="problem">no probe data</span>'
        text += "".join(f'<br><span class="problem">{_e(p)}</span>' for p in r.problems)
        if r.manifest:
            text += f"<details><summary>manifest</summary><pre>{_e(r.manifest)}</pre></details>"
        items.append(f"<li>{text}</li>")
    return "<h2>Runs</h2><ul>" + "".join(items) + "</ul>"


def _table(runs: list[RunData], layers: list[str], metrics: Sequence[str], dead: float) -> str:
    head = "".join(f'<th colspan="{len(metrics)}">{_e(r.name)}</th>' for r in runs)
    sub = "".join(f"<th>{_e(m)}</th>" for _ in runs for m in metrics)
    groups = f'<colgroup span="{len(metrics)}" class="run"></colgroup>' * len(runs)
    lines = [f'<table><colgroup></colgroup>{groups}<tr><th rowspan="2">layer</th>{head}</tr>']
    lines.append(f"<tr>{sub}</tr>")
    flagged = []
    for i, layer in enumerate(layers):
        cells = []
        row_flagged = False
        for r in runs:
            for metric in metrics:
                last = _last(r.scalars.get(layer, {}).get(metric))
                if last is None:
                    cells.append('<td class="missing">-</td>')
                    continue
                step, value = last
                css = ""
                if metric == "dead_units" and value >= dead:
                    css = "dead"
                elif metric == "nonfinite" and value > 0:
                    css = "nonfinite"
                if css:
                    row_flagged = True
                    flagged.append(f"{layer} ({css} in {r.name})")
                attr = f' class="{css}"' if css else ""
                cells.append(f'<td{attr} title="step {step}">{value:.4g}</td>')
        row = ' class="flagged"' if row_flagged else ""
        link = f'<a href="#layer-{i}">{_e(layer)}</a>'
        lines.append(f'<tr{row}><td class="layer">{link}</td>{"".join(cells)}</tr>')
    lines.append("</table>")
    summary = "Flagged: " + ", ".join(_e(f) for f in flagged) if flagged else "No layer flagged."
    rule = f"Flags: dead_units &ge; {dead:g} (class <code>dead</code>), nonfinite &gt; 0 (class <code>nonfinite</code>)."
    return f"<p>{summary}</p><p>{rule}</p>" + "\n".join(lines)


def _figure(src: str, alt: str, caption: str) -> str:
    note = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{_e(src)}" alt="{_e(alt)}">{note}</figure>'


def _e(text: str) -> str:
    return html.escape(text, quote=True)
