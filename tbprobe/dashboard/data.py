"""What the tbprobe dashboard shows, read through TensorBoard's data provider.

Every read goes through `tensorboard.data.provider.DataProvider` (never through files), so the
dashboard works on any logdir TensorBoard reads, with the Python loader or the Rust data server.

A *tbprobe run* is a TensorBoard run holding the `tbprobe/manifest` text or a `<tag>/sparsity`
scalar (e.g. ``baseline/probe``). Its *layers* are the prefixes `<tag>` of its scalar tags
`<tag>/<metric>`, in call order: the manifest's order, then the layers the manifest does not
list (per-layer weight tags, or a run without manifest) after the manifest entries they prefix,
else at the end. Its *metrics* are the last components of those tags, the known ones first.

Overview values travel as base64 of little-endian float32 (the dtype tbprobe logs), with the
flat indices of the cells that hold no value beside them: 4 bytes a cell, exact, and logged
NaN/Inf stay distinct from "not logged".
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tensorboard.data import provider as tb_provider

from tbprobe.tags import HISTOGRAM_METRIC, MANIFEST_TAG, MARGIN_NAMES, SCALAR_NAMES

HEALTH_TAG = "tbprobe/health"  # findings as a Markdown table (the diagnosis issue)
RESERVED_PREFIX = "tbprobe"  # run-level tags (manifest, health, findings), not a layer
# Metrics in the order the metric selector lists them; any other scalar metric follows.
KNOWN_METRICS = (
    *SCALAR_NAMES,
    "saturated",
    "gradient_rms",
    "gradient_nonfinite",
    "weight_rms",
    "weight_gradient_rms",
    "update_ratio",
    "attention_entropy",
    "attention_entropy_min",
)
DEFAULT_DOWNSAMPLE = {"scalars": 1000, "histograms": 500, "images": 100, "text": 100}


class NotFound(LookupError):
    """A run or tag that the experiment does not hold (HTTP 404)."""


@dataclass(frozen=True)
class Source:
    """One request's view of the data: provider, request context, experiment, sample counts."""

    provider: Any
    ctx: Any
    experiment_id: str
    downsample: dict[str, int]

    def list(self, kind: str, plugin: str, runs=None, tags=None) -> dict[str, dict[str, Any]]:
        """``provider.list_<kind>`` (scalars, tensors, blob_sequences) under a run/tag filter."""
        method = getattr(self.provider, f"list_{kind}")
        return method(
            self.ctx,
            experiment_id=self.experiment_id,
            plugin_name=plugin,
            run_tag_filter=tb_provider.RunTagFilter(runs=runs, tags=tags),
        )

    def read(self, kind: str, plugin: str, runs=None, tags=None) -> dict[str, dict[str, list]]:
        """``provider.read_<kind>`` under a run/tag filter, as many samples as TensorBoard keeps."""
        method = getattr(self.provider, f"read_{kind}")
        return method(
            self.ctx,
            experiment_id=self.experiment_id,
            plugin_name=plugin,
            downsample=self.downsample.get(plugin, DEFAULT_DOWNSAMPLE[plugin]),
            run_tag_filter=tb_provider.RunTagFilter(runs=runs, tags=tags),
        )


def has_probe_data(source: Source) -> bool:
    """Whether some run holds the tbprobe manifest or a `<tag>/sparsity` scalar."""
    if source.list("tensors", "text", tags=[MANIFEST_TAG]):
        return True
    scalars = source.list("scalars", "scalars")
    return any(tag.endswith("/sparsity") for tags in scalars.values() for tag in tags)


def probe_runs(source: Source, runs: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """Each tbprobe run's layers in call order, metrics, histogram and image tags, findings.

    Args:
        source: Where to read.
        runs: Only these runs (None: all).

    Returns:
        ``{run: {"layers": [tag], "metrics": [name], "histograms": [layer],
        "images": {layer: [image tag]}, "health": bool}}``, runs sorted by name.
    """
    runs = None if runs is None else list(runs)
    scalar_tags = source.list("scalars", "scalars", runs=runs)
    texts = source.list("tensors", "text", runs=runs, tags=[MANIFEST_TAG, HEALTH_TAG])
    manifests = _manifest_orders(source, [r for r, tags in texts.items() if MANIFEST_TAG in tags])
    histograms = source.list("tensors", "histograms", runs=runs)
    images = source.list("blob_sequences", "images", runs=runs)
    result = {}
    for run in sorted(set(scalar_tags) | set(manifests)):
        layer_metrics = _split_tags(scalar_tags.get(run, {}))
        if run not in manifests and not any("sparsity" in m for m in layer_metrics.values()):
            continue
        metrics = {metric for names in layer_metrics.values() for metric in names}
        result[run] = {
            "layers": order_layers(layer_metrics, manifests.get(run, [])),
            "metrics": order_metrics(metrics - set(MARGIN_NAMES)),
            "histograms": [
                tag.rpartition("/")[0]
                for tag in histograms.get(run, {})
                if tag.endswith("/" + HISTOGRAM_METRIC)
            ],
            "images": _image_tags(images.get(run, {})),
            "health": HEALTH_TAG in texts.get(run, {}),
        }
    return result


def order_layers(layer_metrics: dict[str, Any], manifest: list[str]) -> list[str]:
    """Layers in call order: the manifest's, others after the entries they prefix, else last.

    Example:
        >>> order_layers({"d": 0, "a/call_0": 0, "a": 0, "b": 0}, ["b", "a/call_0"])
        ['b', 'a', 'a/call_0', 'd']
    """
    position = {tag: index for index, tag in enumerate(manifest)}
    listed = list(layer_metrics)

    def key(layer: str) -> tuple[float, int]:
        if layer in position:
            return position[layer], 0
        prefixed = [i for tag, i in position.items() if tag.startswith(layer + "/")]
        if prefixed:
            return min(prefixed) - 0.5, 0
        return len(manifest), listed.index(layer)

    return sorted(listed, key=key)


def order_metrics(metrics: Iterable[str]) -> list[str]:
    """The known metrics in `KNOWN_METRICS` order, then the others sorted."""
    metrics = set(metrics)
    known = [m for m in KNOWN_METRICS if m in metrics]
    return known + sorted(metrics - set(known))


def overview(source: Source, metric: str, runs: list[str]) -> dict[str, dict[str, Any]]:
    """One `metric` matrix per run: rows = its layers in call order, columns = logged steps.

    Returns:
        ``{run: {"layers": [tag], "steps": [int], "values": base64 float32 row-major
        [layers, steps], "missing": [flat index of a cell not logged]}}``.

    Raises:
        NotFound: A run is not a tbprobe run, or none of `runs` logs `metric`.
    """
    index = probe_runs(source, runs)
    _check_runs(source, runs, index)
    known = order_metrics({m for run in runs for m in index[run]["metrics"]})
    if metric not in known:
        raise NotFound(f"No run of {runs} logs metric {metric!r}{_did_you_mean(metric, known)}")
    wanted = {run: index[run]["layers"] for run in runs}
    tags = sorted({f"{layer}/{metric}" for layers in wanted.values() for layer in layers})
    data = source.read("scalars", "scalars", runs=runs, tags=tags) if tags else {}
    result = {}
    for run in runs:
        series = data.get(run, {})
        layers = [layer for layer in wanted[run] if f"{layer}/{metric}" in series]
        steps = sorted({d.step for layer in layers for d in series[f"{layer}/{metric}"]})
        column = {step: i for i, step in enumerate(steps)}
        values = np.full((len(layers), len(steps)), np.nan, np.float32)
        filled = np.zeros(values.shape, bool)
        for row, layer in enumerate(layers):
            for datum in series[f"{layer}/{metric}"]:
                values[row, column[datum.step]] = datum.value
                filled[row, column[datum.step]] = True
        result[run] = {
            "layers": layers,
            "steps": steps,
            "values": encode_float32(values),
            "missing": np.flatnonzero(~filled).tolist(),
        }
    return result


def encode_float32(values: np.ndarray) -> str:
    """Base64 of `values` as little-endian float32, row-major (`decode_float32` reverses it)."""
    return base64.b64encode(np.ascontiguousarray(values, "<f4").tobytes()).decode("ascii")


def decode_float32(text: str) -> np.ndarray:
    """The flat float32 array that `encode_float32` encoded."""
    return np.frombuffer(base64.b64decode(text), "<f4")


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
    _check_runs(source, runs, index)
    if not any(tag in index[run]["layers"] or tag in index[run]["histograms"] for run in runs):
        known = sorted({layer for run in runs for layer in index[run]["layers"]})
        raise NotFound(f"No run of {runs} holds layer {tag!r}{_did_you_mean(tag, known)}")
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
    _check_runs(source, runs, probe_runs(source, runs))
    data = source.read("tensors", "text", runs=runs, tags=[HEALTH_TAG])
    result = {}
    for run, tags in data.items():
        if not tags.get(HEALTH_TAG):
            continue
        last = tags[HEALTH_TAG][-1]
        text = _text(last.numpy)
        result[run] = {"step": last.step, "text": text, "rows": markdown_rows(text)}
    return result


def markdown_rows(text: str) -> list[dict[str, str]]:
    """Rows of the first Markdown table in `text` as ``{header: cell}``, backticks removed.

    Example:
        >>> markdown_rows("| rule | layer |\\n|---|---|\\n| dead | `conv1` |")
        [{'rule': 'dead', 'layer': 'conv1'}]
    """
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    if len(lines) < 2:
        return []
    cells = [[cell.strip().strip("`") for cell in line.strip("|").split("|")] for line in lines]
    header = [name.lower() for name in cells[0]]
    return [dict(zip(header, row, strict=False)) for row in cells[2:]]


def _manifest_orders(source: Source, runs: list[str]) -> dict[str, list[str]]:
    """Each run's probed outputs in call order, from its latest manifest's table."""
    if not runs:
        return {}
    data = source.read("tensors", "text", runs=runs, tags=[MANIFEST_TAG])
    orders = {}
    for run, tags in data.items():
        if tags.get(MANIFEST_TAG):
            rows = markdown_rows(_text(tags[MANIFEST_TAG][-1].numpy))
            orders[run] = [row["tag"] for row in rows if row.get("tag")]
    return orders


def _split_tags(tags: Iterable[str]) -> dict[str, list[str]]:
    """``{layer: [metric]}`` of the tags `<layer>/<metric>` outside `RESERVED_PREFIX`."""
    layers: dict[str, list[str]] = {}
    for tag in tags:
        layer, _, metric = tag.rpartition("/")
        if layer and layer != RESERVED_PREFIX and not layer.startswith(RESERVED_PREFIX + "/"):
            layers.setdefault(layer, []).append(metric)
    return layers


def _image_tags(tags: Iterable[str]) -> dict[str, list[str]]:
    images: dict[str, list[str]] = {}
    for tag in tags:
        images.setdefault(tag.rpartition("/")[0], []).append(tag)
    return images


def _check_runs(source: Source, runs: list[str], index: dict[str, Any]) -> None:
    """Raise `NotFound` naming the first of `runs` missing from `index`, with a close name."""
    unknown = [run for run in runs if run not in index]
    if unknown:
        known = list(probe_runs(source))
        raise NotFound(
            f"Unknown run {unknown[0]!r}: not a tbprobe run of this TensorBoard"
            f"{_did_you_mean(unknown[0], known)}"
        )


def _did_you_mean(name: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    return f". Did you mean {close[0]!r}?" if close else ""


def _text(array: Any) -> str:
    value = np.asarray(array).reshape(-1)
    return value[0].decode("utf-8", "replace") if value.size else ""
