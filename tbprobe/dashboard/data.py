"""What the tbprobe dashboard shows, read through TensorBoard's data provider.

Every read goes through `tensorboard.data.provider.DataProvider` (never through files), so the
dashboard works on any logdir TensorBoard reads, with the Python loader or the Rust data server.

A *tbprobe run* is a TensorBoard run holding the `tbprobe/manifest` text or a `<tag>/sparsity`
scalar (e.g. ``baseline/probe``). Its *layers* are the prefixes `<tag>` of its scalar tags
`<tag>/<metric>`, in call order: the manifest's order, then the layers the manifest does not
list (per-layer weight tags, or a run without manifest) after the manifest entries they prefix,
else at the end. Its *metrics* are the last components of those tags, the known ones first.

The overview's matrices are in `tbprobe.dashboard.overview`, the layer view and the findings
in `tbprobe.dashboard.views`.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tensorboard.data import provider as tb_provider

from tbprobe.dashboard.cache import VersionedCache
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
LISTING_TTL_S = 2.0  # seconds a listing of series is reused (TensorBoard reloads every 30 s)
DEFAULT_DOWNSAMPLE = {"scalars": 1000, "histograms": 500, "images": 100, "text": 100}


class NotFound(LookupError):
    """A run or tag that the experiment does not hold (HTTP 404)."""


@dataclass(frozen=True)
class Source:
    """One request's view of the data: provider, request context, experiment, sample counts,
    and the plugin's cache of values computed from it."""

    provider: Any
    ctx: Any
    experiment_id: str
    downsample: dict[str, int]
    cache: VersionedCache = field(default_factory=VersionedCache)

    def list(self, kind: str, plugin: str, runs=None, tags=None) -> dict[str, dict[str, Any]]:
        """``provider.list_<kind>`` (scalars, tensors, blob_sequences) under a run/tag filter.

        A listing is reused for `LISTING_TTL_S` seconds: the page's first requests come together
        and each lists every series, which costs with thousands of series.
        """
        method = getattr(self.provider, f"list_{kind}")
        key = ("list", self.experiment_id, kind, plugin, _key(runs), _key(tags))
        return self.cache.get(
            key,
            int(time.monotonic() // LISTING_TTL_S),
            lambda: method(
                self.ctx,
                experiment_id=self.experiment_id,
                plugin_name=plugin,
                run_tag_filter=tb_provider.RunTagFilter(runs=runs, tags=tags),
            ),
        )

    # `builtins.list`: in this class `list` names the method above.
    def read(
        self, kind: str, plugin: str, runs=None, tags=None
    ) -> dict[str, dict[str, builtins.list[Any]]]:
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
    index = run_layers(source, runs)
    histograms = source.list("tensors", "histograms", runs=runs)
    images = source.list("blob_sequences", "images", runs=runs)
    for run, entry in index.items():
        entry["histograms"] = [
            tag.rpartition("/")[0]
            for tag in histograms.get(run, {})
            if tag.endswith("/" + HISTOGRAM_METRIC)
        ]
        entry["images"] = _image_tags(images.get(run, {}))
    return index


def run_layers(
    source: Source, runs: list[str] | None, listing: dict | None = None
) -> dict[str, dict[str, Any]]:
    """Each tbprobe run's layers in call order, metrics and whether it logs findings.

    Args:
        source: Where to read.
        runs: Only these runs (None: all).
        listing: ``source.list("scalars", "scalars", runs=runs)`` when already listed.

    Returns:
        ``{run: {"layers": [tag], "metrics": [name], "health": bool}}``, runs sorted by name.
    """
    if listing is None:
        listing = source.list("scalars", "scalars", runs=runs)
    texts = source.list("tensors", "text", runs=runs, tags=[MANIFEST_TAG, HEALTH_TAG])
    result = {}
    for run in sorted(set(listing) | set(texts)):
        manifest = texts.get(run, {}).get(MANIFEST_TAG)
        layer_metrics = _split_tags(listing.get(run, {}))
        if manifest is None and not any("sparsity" in m for m in layer_metrics.values()):
            continue
        metrics = {metric for names in layer_metrics.values() for metric in names}
        result[run] = {
            "layers": order_layers(layer_metrics, _manifest_order(source, run, manifest)),
            "metrics": order_metrics(metrics - set(MARGIN_NAMES)),
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


def _manifest_order(source: Source, run: str, series: Any) -> list[str]:
    """The run's probed outputs in call order, from its latest manifest (cached per version)."""
    if series is None:
        return []

    def read() -> list[str]:
        data = source.read("tensors", "text", runs=[run], tags=[MANIFEST_TAG])
        manifests = data.get(run, {}).get(MANIFEST_TAG)
        rows = markdown_rows(text_of(manifests[-1].numpy)) if manifests else []
        return [row["tag"] for row in rows if row.get("tag")]

    version = (series.max_step, series.max_wall_time)
    return source.cache.get(("manifest", source.experiment_id, run), version, read)


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


def check_runs(source: Source, runs: list[str], index: dict[str, Any]) -> None:
    """Raise `NotFound` naming the first of `runs` missing from `index`, with a close name."""
    unknown = [run for run in runs if run not in index]
    if unknown:
        known = list(run_layers(source, None))
        raise NotFound(
            f"Unknown run {unknown[0]!r}: not a tbprobe run of this TensorBoard"
            f"{did_you_mean(unknown[0], known)}"
        )


def did_you_mean(name: str, known: list[str]) -> str:
    """A hint naming the closest of `known` to `name`, or ""."""
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    return f". Did you mean {close[0]!r}?" if close else ""


def _key(names: Iterable[str] | None) -> frozenset[str] | None:
    return None if names is None else frozenset(names)


def text_of(array: Any) -> str:
    """The string of a text summary's tensor."""
    value = np.asarray(array).reshape(-1)
    return value[0].decode("utf-8", "replace") if value.size else ""
