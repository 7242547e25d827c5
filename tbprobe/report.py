"""`tbprobe report`: a static HTML page with PNG figures comparing the probe logs of runs.

`write_report(runs, out_dir)` reads each run's `probe/` event files (`tbprobe.events`), runs
given and named as `tbprobe launch` takes and names them (`tbprobe.runs`), and writes
`out_dir/index.html` and `out_dir/figures/*.png` (drawn by `tbprobe.figures`):

* per metric (sparsity, dead units, mean, std, non-finite), one line per layer over steps, one
  subplot per run. Beyond `max_layers` layers, the most telling ones are drawn in color with a
  legend (the highest last value for sparsity, dead units and non-finite; the widest range over
  steps for mean and std), the others in thin gray, and the caption says so;
* per layer, the last `activations` histogram of every run overlaid, which TensorBoard, showing
  one card per run, cannot do;
* at the top, each run's findings (`tbprobe.monitor.diagnose`, as `tbprobe check` prints them);
* a table of each layer's last values per run, with the cells of mostly dead layers
  (`dead_units >= dead_threshold`) and of layers with non-finite values (`nonfinite > 0`)
  carrying the CSS classes `dead` and `nonfinite`, and their rows the class `flagged`.

Partial logs are reported as they are: layers with fewer steps, runs missing layers, and the
truncated or corrupt event files listed under each run. matplotlib is imported only when
figures are drawn, which keeps `tbprobe --help` fast.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from tbprobe.events import RunData, read_run
from tbprobe.figures import histogram_figures, metric_figure
from tbprobe.monitor import diagnose
from tbprobe.runs import PROBE_RUNS, check_distinct_names, parse_run_arguments
from tbprobe.tags import SCALAR_NAMES

DEFAULT_METRICS = SCALAR_NAMES
DEFAULT_DEAD_THRESHOLD = 0.5
DEFAULT_MAX_LAYERS = 20
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
    body = [f"<h1>{_e(title)}</h1>", _findings_section(data), _runs_section(data)]
    body.append("<h2>Last values</h2>")
    body.append(_table(data, layers, metrics, dead_threshold))
    body.append("<h2>Metrics over steps</h2>")
    for metric in metrics:
        name = f"metric-{metric}.png"
        flag = dead_threshold if metric == "dead_units" else None
        drawn, caption = metric_figure(data, metric, layers, figures / name, max_layers, flag)
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


def _histogram_section(runs: list[RunData], layers: list[str], folder: Path) -> list[str]:
    """The HTML of the histogram figures drawn into `folder`, one heading per layer."""
    html_parts = []
    for i, (layer, (name, caption)) in enumerate(
        zip(layers, histogram_figures(runs, layers, folder), strict=True)
    ):
        html_parts.append(f'<h3 id="layer-{i}">{_e(layer)}</h3>')
        if name is None:
            html_parts.append(f"<p>{_e(caption)}</p>")
        else:
            html_parts.append(_figure(f"figures/{name}", layer, caption))
    return html_parts


def _findings_section(runs: list[RunData]) -> str:
    """Each run's findings at its last step (`tbprobe.monitor.diagnose`), as `tbprobe check`."""
    items = []
    for r in runs:
        findings = diagnose(r.scalars)
        lines = "".join(f'<li class="finding">{_e(f.message)}</li>' for f in findings)
        text = f"{len(findings)} finding(s)<ul>{lines}</ul>" if findings else "no finding"
        items.append(f"<li><b>{_e(r.name)}</b>: {text}</li>")
    return "<h2>Findings</h2><ul>" + "".join(items) + "</ul>"


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
