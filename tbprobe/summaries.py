"""Writing tbprobe's results as TensorBoard summaries: tags, plugin metadata, one event a step.

A log step's results arrive on the host as one small matrix plus the PNG strings. They are
written as ONE `Summary` protobuf holding every tag's value, with
`tf.summary.experimental.write_raw_pb`: a single op, no graph to trace (a compiled write step
has one op per tag to trace, and would be traced again for every writer).
Values use the formats and plugin metadata of TensorBoard's own summary ops, so the stock
dashboards read them:

* histograms: a `[k, 3]` float64 tensor `(left, right, count)` (plugin `histograms`);
* scalars: a float32 scalar (plugin `scalars`);
* images: a string vector `[width, height, png, ...]` (plugin `images`);
* the run header, once: the Markdown manifest `tbprobe/manifest` (plugin `text`) and a
  custom-scalars layout (plugin `custom_scalars`) with one chart per metric across all layers
  (the attention entropies included) and a mean +- std margin chart per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from tensorboard.compat.proto import summary_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.plugins.text import metadata as text_metadata

from tbprobe.tags import (
    ATTENTION,
    ATTENTION_SCALAR_NAMES,
    GRADIENT_SCALAR_NAMES,
    HISTOGRAM_METRIC,
    MANIFEST_TAG,
    MARGIN_NAMES,
    SCALAR_NAMES,
    UPDATE_RATIO,
)

HISTOGRAM_METADATA = histogram_metadata.create_summary_metadata("", "")
SCALAR_METADATA = scalar_metadata.create_summary_metadata("", "")
IMAGE_METADATA = image_metadata.create_summary_metadata("", "")
TEXT_METADATA = text_metadata.create_summary_metadata("", "")
LAYOUT_METADATA = custom_scalar_metadata.create_summary_metadata()


@dataclass(frozen=True)
class ManifestRow:
    """One probed output as listed in the manifest: `kind` as `ProbedOutput.kind`;
    `gradients`: its gradient tags are logged; `weights`: its layer's weight tags are (see
    `tbprobe.gradient_log`)."""

    tag: str
    layer_class: str
    shape: tuple[int | None, ...]
    dtype: str
    image: str | None
    kind: str = "activation"
    gradients: bool = False
    weights: bool = False


class SummaryBuilder:
    """The values of a log step as one `Summary` protobuf, reused from step to step.

    A tag's value (tag, plugin metadata, dtype, shape) is made on its first use; later steps
    only overwrite its data (scalars through their cached fields), which keeps the host's share
    of a log step small when outputs are many.
    """

    def __init__(self) -> None:
        self.summary = summary_pb2.Summary()
        self._values: dict[str, Any] = {}
        self._scalars: dict[str, Any] = {}  # tag -> its float_val field, the hot path

    def scalar(self, tag: str, value: float) -> None:
        """Set a float32 scalar (plugin `scalars`)."""
        field = self._scalars.get(tag)
        if field is None:
            field = self._tensor(tag, SCALAR_METADATA, types_pb2.DT_FLOAT, ()).float_val
            field.append(0.0)
            self._scalars[tag] = field
        field[0] = value

    def histogram(self, tag: str, rows: np.ndarray) -> None:
        """Set `[k, 3]` histogram rows (plugin `histograms`)."""
        rows = np.ascontiguousarray(rows, np.float64)
        tensor = self._tensor(tag, HISTOGRAM_METADATA, types_pb2.DT_DOUBLE, rows.shape)
        tensor.tensor_content = rows.tobytes()

    def images(self, tag: str, encoded: list[bytes]) -> None:
        """Set the image plugin's `[width, height, png, ...]` string vector."""
        self._strings(tag, IMAGE_METADATA, list(encoded), (len(encoded),))

    def string(self, tag: str, value: str | bytes, metadata: Any = TEXT_METADATA) -> None:
        """Set a scalar string (plugin `text` unless `metadata` says otherwise)."""
        self._strings(tag, metadata, [value.encode() if isinstance(value, str) else value], ())

    def remove(self, tag: str) -> None:
        """Drop `tag`'s value, if set: written at some steps only (e.g. `tbprobe/health`)."""
        self._scalars.pop(tag, None)
        value = self._values.pop(tag, None)
        if value is not None:
            self.summary.value.remove(value)

    def write(self, writer: Any, step: int, *others: SummaryBuilder) -> None:
        """Write these values, and those of `others`, as one event at `step`, whatever
        `record_if` says. (Serialized `Summary` messages concatenate into their union.)"""
        data = b"".join(b.summary.SerializeToString() for b in (self, *others))
        with writer.as_default(step=step), tf.summary.record_if(True):
            tf.summary.experimental.write_raw_pb(data, step=step)

    def _strings(self, tag: str, metadata: Any, strings: list[bytes], shape: tuple) -> None:
        tensor = self._tensor(tag, metadata, types_pb2.DT_STRING, shape)
        del tensor.string_val[:]
        tensor.string_val.extend(strings)

    def _tensor(self, tag: str, metadata: Any, dtype: int, shape: tuple[int, ...]) -> Any:
        value = self._values.get(tag)
        if value is None:
            value = self.summary.value.add(tag=tag, metadata=metadata)
            value.tensor.dtype = dtype
            self._values[tag] = value
        dims = value.tensor.tensor_shape.dim
        if [d.size for d in dims] != list(shape):
            del dims[:]
            dims.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape)
        return value.tensor


def add_layer_values(
    builder: SummaryBuilder, tag: str, scalars: dict[str, float], rows: np.ndarray
) -> None:
    """Add one probed output's histogram and scalars, mean +- std included."""
    builder.histogram(f"{tag}/{HISTOGRAM_METRIC}", rows)
    for name in SCALAR_NAMES:
        builder.scalar(f"{tag}/{name}", scalars[name])
    lower, upper = MARGIN_NAMES
    builder.scalar(f"{tag}/{lower}", scalars["mean"] - scalars["std"])
    builder.scalar(f"{tag}/{upper}", scalars["mean"] + scalars["std"])


def add_attention_values(builder: SummaryBuilder, tag: str, entropies: np.ndarray) -> None:
    """Add an attention output's scalars (its image goes with the other images).

    Args:
        builder: the step's summary.
        tag: the attention output's tag, `<layer tag>/attention`; also the image's tag.
        entropies: `[mean, lowest head's mean]` normalized entropies, written as
            `<layer tag>/attention_entropy` and `<layer tag>/attention_entropy_min`.
    """
    layer_tag = tag.removesuffix(f"/{ATTENTION}")
    for name, value in zip(ATTENTION_SCALAR_NAMES, entropies, strict=True):
        builder.scalar(f"{layer_tag}/{name}", float(value))


def add_run_header(builder: SummaryBuilder, rows: list[ManifestRow]) -> None:
    """Add the manifest text and the custom-scalars layout."""
    builder.string(MANIFEST_TAG, manifest_markdown(rows))
    tags = [row.tag for row in rows if row.kind != ATTENTION]
    layout = scalars_layout(
        tags,
        attention=len(tags) < len(rows),
        gradients=any(row.gradients for row in rows),
        weights=any(row.weights for row in rows),
    ).SerializeToString()
    builder.string(custom_scalar_metadata.CONFIG_SUMMARY_TAG, layout, LAYOUT_METADATA)


def manifest_markdown(rows: list[ManifestRow]) -> str:
    """Markdown table of what is logged per probed output (TensorBoard's Text dashboard)."""
    scalars = ", ".join((*SCALAR_NAMES, *MARGIN_NAMES))
    entropies = ", ".join(f"`<layer>/{name}`" for name in ATTENTION_SCALAR_NAMES)
    lines = [
        f"tbprobe logs {len(rows)} outputs. Every layer output gets the histogram `activations` "
        f"and the scalars {scalars}. Attention probabilities (`<layer>/attention`) get the "
        f"image and the scalars {entropies}.",
        "",
        "| tag | layer class | output shape | dtype | image |",
        "|---|---|---|---|---|",
    ]
    extra = any(row.gradients or row.weights for row in rows)
    if extra:  # gradients and weights (tbprobe.gradient_log): one more column each
        lines[1:1] = [
            "",
            "Outputs with gradients also get the histogram `gradients` (dLoss/dOutput) and the "
            "scalars gradient_rms, gradient_nonfinite. Layers with weights get `<layer>/"
            "weight_rms` and, as asked, weight_gradient_rms, update_ratio and `weights`.",
        ]
        lines[-2:] = [lines[-2] + " gradients | weights |", lines[-1] + "---|---|"]
    for row in rows:
        shape = "(" + ", ".join("None" if d is None else str(d) for d in row.shape) + ")"
        image_tag = row.tag if row.kind == ATTENTION else f"{row.tag}/{row.image}"
        image = f"`{image_tag}`" if row.image else "-"
        line = f"| `{row.tag}` | {row.layer_class} | {shape} | {row.dtype} | {image} |"
        if extra:
            line += f" {'yes' if row.gradients else 'no'} | {'yes' if row.weights else 'no'} |"
        lines.append(line)
    return "\n".join(lines)


def scalars_layout(
    tags: list[str], attention: bool = False, gradients: bool = False, weights: bool = False
) -> layout_pb2.Layout:
    """Custom-scalars layout: every layer's metric in one chart (the attention entropies too
    when `attention`); mean +- std per layer of `tags`; with `gradients`, "gradient_rms by
    layer"; with `weights`, "update_ratio by layer"."""
    lower, upper = MARGIN_NAMES
    names = (*SCALAR_NAMES, *ATTENTION_SCALAR_NAMES) if attention else SCALAR_NAMES
    overview = layout_pb2.Category(
        title="tbprobe: all layers",
        chart=[
            layout_pb2.Chart(
                title=name,
                multiline=layout_pb2.MultilineChartContent(tag=[rf".*/{name}$"]),
            )
            for name in names
        ],
    )
    margins = layout_pb2.Category(
        title="tbprobe: mean +- std per layer",
        closed=True,
        chart=[
            layout_pb2.Chart(
                title=tag,
                margin=layout_pb2.MarginChartContent(
                    series=[
                        layout_pb2.MarginChartContent.Series(
                            value=f"{tag}/mean",
                            lower=f"{tag}/{lower}",
                            upper=f"{tag}/{upper}",
                        )
                    ]
                ),
            )
            for tag in tags
        ],
    )
    by_layer = [GRADIENT_SCALAR_NAMES[0]] if gradients else []
    by_layer += [UPDATE_RATIO] if weights else []
    categories = [overview, margins]
    if by_layer:
        categories.insert(
            1,
            layout_pb2.Category(
                title="tbprobe: gradients and weights",
                chart=[
                    layout_pb2.Chart(
                        title=f"{name} by layer",
                        multiline=layout_pb2.MultilineChartContent(tag=[rf".*/{name}$"]),
                    )
                    for name in by_layer
                ],
            ),
        )
    return layout_pb2.Layout(category=categories)
