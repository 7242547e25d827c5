"""The layer view's data (everything logged for one probed output) and the runs' findings,
read through the data provider."""

from __future__ import annotations

from typing import Any

import numpy as np

from tbprobe.dashboard.data import (
    HEALTH_TAG,
    KNOWN_METRICS,
    NotFound,
    Source,
    check_runs,
    did_you_mean,
    markdown_rows,
    probe_runs,
    text_of,
)
from tbprobe.tags import HISTOGRAM_METRIC


def layer_view(source: Source, tag: str, runs: list[str]) -> dict[str, dict[str, Any]]:
    """Everything logged for one probed output `tag` in each of `runs`.

    Returns:
        ``{run: {"histograms": {"steps": [int], "rows": [[[left, right, count], ...], ...]},
        "scalars": {metric: {"steps": [int], "values": [float]}},
        "images": {image tag: {"steps": [int], "blobs": [[blob key, ...], ...]}}}}``.

        Non-finite floats become "NaN", "Infinity", "-Infinity" in TensorBoard's JSON.

    Raises:
        NotFound: A run is not a tbprobe run, or no run holds `tag`.
    """
    index = probe_runs(source, runs)
    check_runs(source, runs, index)
    if not any(tag in index[run]["layers"] or tag in index[run]["histograms"] for run in runs):
        known = sorted({layer for run in runs for layer in index[run]["layers"]})
        raise NotFound(f"No run of {runs} holds layer {tag!r}{did_you_mean(tag, known)}")
    histogram_tag = f"{tag}/{HISTOGRAM_METRIC}"
    histograms = source.read("tensors", "histograms", runs=runs, tags=[histogram_tag])
    metrics = [f"{tag}/{metric}" for metric in KNOWN_METRICS]
    metrics += [f"{tag}/{m}" for r in runs for m in index[r]["metrics"] if m not in KNOWN_METRICS]
    scalars = source.read("scalars", "scalars", runs=runs, tags=metrics)
    image_tags = sorted({t for run in runs for t in index[run]["images"].get(tag, [])})
    images = (
        source.read("blob_sequences", "images", runs=runs, tags=image_tags) if image_tags else {}
    )
    result = {}
    for run in runs:
        histogram = histograms.get(run, {}).get(histogram_tag, [])
        result[run] = {
            "histograms": {
                "steps": [d.step for d in histogram],
                "rows": [np.asarray(d.numpy, np.float64).tolist() for d in histogram],
            },
            "scalars": {
                name.rpartition("/")[2]: {
                    "steps": [d.step for d in data],
                    "values": [d.value for d in data],
                }
                for name, data in scalars.get(run, {}).items()
            },
            "images": {
                name: {
                    "steps": [d.step for d in data],
                    "blobs": [[ref.blob_key for ref in d.values[2:]] for d in data],
                }
                for name, data in images.get(run, {}).items()
            },
        }
    return result


def findings(source: Source, runs: list[str]) -> dict[str, dict[str, Any]]:
    """The latest `tbprobe/health` text of each run that has one, with its table parsed.

    Returns:
        ``{run: {"step": int, "text": markdown, "rows": [{column: cell}]}}``; rows come from the
        Markdown table, cells without backticks.

    Raises:
        NotFound: A run is not a tbprobe run.
    """
    check_runs(source, runs, probe_runs(source, runs))
    data = source.read("tensors", "text", runs=runs, tags=[HEALTH_TAG])
    result = {}
    for run, tags in data.items():
        if not tags.get(HEALTH_TAG):
            continue
        last = tags[HEALTH_TAG][-1]
        text = text_of(last.numpy)
        result[run] = {"step": last.step, "text": text, "rows": markdown_rows(text)}
    return result
