"""The overview's data: one matrix per run of a metric over its layers (rows, in call order)
and logged steps (columns), read through the data provider and cached per data version.

Values travel as base64 of little-endian float32 (the dtype tbprobe logs), with the flat indices
of the cells that hold no value beside them: 4 bytes a cell, exact, and logged NaN or infinity
stay distinct from "not logged".
"""

from __future__ import annotations

import base64
import functools
from typing import Any

import numpy as np

from tbprobe.dashboard.data import (
    NotFound,
    Source,
    check_runs,
    did_you_mean,
    order_metrics,
    run_layers,
)


def overview(
    source: Source, metric: str | None, runs: list[str] | None
) -> tuple[str, dict[str, dict[str, Any]]]:
    """One `metric` matrix per run: rows = its layers in call order, columns = logged steps.

    Args:
        source: Where to read.
        metric: A scalar metric, e.g. "sparsity"; None: the first the runs log.
        runs: TensorBoard run names; None: every tbprobe run.

    Returns:
        ``(metric, {run: {"layers": [tag], "steps": [int], "values": base64 float32
        row-major [layers, steps], "missing": [flat index of a cell not logged]}})``.

    Raises:
        NotFound: A run is not a tbprobe run, or none of `runs` logs `metric`.
    """
    listing = source.list("scalars", "scalars", runs=runs)
    index = run_layers(source, runs, listing)
    runs = list(index) if runs is None else runs
    check_runs(source, runs, index)
    known = order_metrics({m for run in runs for m in index[run]["metrics"]})
    metric = known[0] if metric is None and known else metric
    if metric not in known:
        raise NotFound(
            f"No run of {runs} logs metric {metric!r}{did_you_mean(metric or '', known)}"
        )
    result: dict[str, dict[str, Any]] = {}
    for run in runs:
        series = {
            layer: listing.get(run, {})[f"{layer}/{metric}"]
            for layer in index[run]["layers"]
            if f"{layer}/{metric}" in listing.get(run, {})
        }
        # The matrix changes only with the series' last steps and wall times, and layer order.
        version = (
            tuple(series),
            tuple((s.max_step, s.max_wall_time) for s in series.values()),
        )
        result[run] = source.cache.get(
            ("overview", source.experiment_id, run, metric),
            version,
            functools.partial(_matrix, source, run, list(series), metric),
        )
    return metric, result


def _matrix(source: Source, run: str, layers: list[str], metric: str) -> dict[str, Any]:
    """The overview matrix of `metric` over `layers` (rows) and logged steps (columns)."""
    tags = [f"{layer}/{metric}" for layer in layers]
    data = source.read("scalars", "scalars", runs=[run], tags=tags).get(run, {})
    rows = [data.get(tag, []) for tag in tags]
    steps_per_row = [np.fromiter((d.step for d in row), np.int64, len(row)) for row in rows]
    steps = np.unique(np.concatenate([np.zeros(0, np.int64), *steps_per_row]))
    values = np.full((len(layers), len(steps)), np.nan, np.float32)
    filled = np.zeros(values.shape, bool)
    for i, (row, row_steps) in enumerate(zip(rows, steps_per_row, strict=True)):
        columns = np.searchsorted(steps, row_steps)
        values[i, columns] = np.fromiter((d.value for d in row), np.float64, len(row))
        filled[i, columns] = True
    return {
        "layers": layers,
        "steps": steps.tolist(),
        "values": encode_float32(values),
        "missing": np.flatnonzero(~filled).tolist(),
    }


def encode_float32(values: np.ndarray) -> str:
    """Base64 of `values` as little-endian float32, row-major (`decode_float32` reverses it)."""
    return base64.b64encode(np.ascontiguousarray(values, "<f4").tobytes()).decode("ascii")


def decode_float32(text: str) -> np.ndarray:
    """The flat float32 array that `encode_float32` encoded."""
    return np.frombuffer(base64.b64decode(text), "<f4")
