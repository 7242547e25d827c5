"""The report's figures, drawn with matplotlib from `RunData` into PNG files.

* `metric_figure`: one metric's lines over steps, one line per layer, one subplot per run on a
  shared y axis, one color per layer in every run. Beyond `max_layers` layers, the most telling
  ones (`telling_layers`) are drawn in color with a legend, the others in thin gray.
* `histogram_figures`: per layer, the last `activations` histogram of every run overlaid
  (densities as step outlines), on a log axis when a spike would flatten the rest.

matplotlib is imported only when a figure is drawn, and without pyplot, so that importing
`tbprobe.report` stays light and no backend is switched.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from tbprobe.events import RunData

LOG_SCALE_RATIO = 30.0  # histogram densities use a log axis when max / median exceeds this
HIGH_IS_BAD = frozenset({"sparsity", "dead_units", "nonfinite"})
_LINESTYLES = ("-", "--", ":", "-.")

Drawn = tuple[str | None, str]  # (PNG file name, or None when nothing was drawn; caption)


def telling_layers(runs: list[RunData], metric: str, layers: list[str], count: int) -> list[str]:
    """The `count` layers of `layers` worth a color in the plot of `metric`.

    Args:
        runs: The runs plotted.
        metric: A scalar metric; for those in `HIGH_IS_BAD` a layer scores its highest last
            (finite) value in any run, for the others its widest range over steps in any run.
        layers: Candidate layers, in plot order.
        count: How many to keep.

    Returns:
        The `count` best-scoring layers, in the order of `layers`.
    """

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


def metric_figure(
    runs: list[RunData],
    metric: str,
    layers: list[str],
    path: Path,
    max_layers: int,
    flag: float | None = None,
) -> tuple[bool, str]:
    """Draw `metric` over steps for every layer, one subplot per run, into the PNG `path`.

    Args:
        runs: The runs, one subplot each (three per row), sharing the y axis.
        metric: The scalar metric, e.g. ``"dead_units"``.
        layers: Every layer, in legend order; those that logged `metric` are drawn.
        path: The PNG file to write.
        max_layers: Layers drawn in color and in the legend (see `telling_layers`); the others
            in thin gray.
        flag: A level drawn as a red dashed line, e.g. the dead-unit threshold; None for none.

    Returns:
        ``(drawn, caption)``: nothing is drawn when no run logged `metric` or it is 0
        everywhere, and the caption then says so; else it says how many layers are colored.
    """
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
    shown = telling_layers(runs, metric, logged, max_layers)
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
    """Up to `count` distinct colors, to be cycled with line styles beyond that.

    Args:
        count: How many colors are wanted: tab10's are used up to 9, else tab20's.

    Returns:
        RGBA tuples, without the colormaps' grays, which are kept for the layers drawn as
        background.
    """
    import matplotlib

    table = matplotlib.colormaps["tab10" if count <= 9 else "tab20"]
    colors = [table(i) for i in range(table.N) if not np.allclose(table(i)[:3], table(i)[0])]
    return colors[:count]


def histogram_figures(runs: list[RunData], layers: list[str], folder: Path) -> list[Drawn]:
    """Per layer, a PNG in `folder` overlaying each run's last activation histogram.

    Args:
        runs: The runs to compare; each is drawn in its own color and line width.
        layers: The layers, one figure each, numbered in this order.
        folder: Where the PNGs are written, as ``hist-<index>-<layer>.png``.

    Returns:
        Per layer, ``(file name in folder, caption)``: the name is None when no run logged the
        layer's histogram; the caption names runs that lack it or hold no finite value.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    # One figure, cleared per layer, with fixed margins: a fresh constrained-layout figure per
    # layer costs about twice as much, which adds up to minutes for ResNet50's 176 layers.
    figure = Figure(figsize=(6.0, 2.8))
    colors = figure_colors(len(runs))
    drawn: list[Drawn] = []
    for i, layer in enumerate(layers):
        if not any(layer in r.histograms for r in runs):
            drawn.append((None, "No run logged an activation histogram for this layer."))
            continue
        figure.clear()
        figure.subplots_adjust(left=0.14, right=0.98, bottom=0.17, top=0.9)
        ax = figure.add_subplot()
        notes = []
        densities = [np.zeros(0)]
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
                densities.append(density)
                ax.stairs(density, np.append(left, right[-1]), color=color, lw=width, label=label)
        ax.set_title(layer, fontsize=9)
        ax.set_xlabel("activation")
        ax.set_ylabel("density")
        heights = np.concatenate(densities)
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
        drawn.append((name, "; ".join(notes)))
    return drawn
