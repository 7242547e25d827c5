"""Writing tbprobe's results as TensorBoard summaries: tags, plugin metadata, run header.

Each summary is written with `tf.summary.write` and the plugin metadata of TensorBoard's own
summary ops, so the stock dashboards read it:

* histograms: a `[k, 3]` float64 tensor `(left, right, count)` (plugin `histograms`);
* scalars: a float32 scalar (plugin `scalars`);
* images: a string vector `[width, height, png, ...]` (plugin `images`);
* the run header, once: the Markdown manifest `tbprobe/manifest` (plugin `text`) and a
  custom-scalars layout (plugin `custom_scalars`) with one chart per metric across all layers
  and a mean +- std margin chart per layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tensorflow as tf
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.plugins.text import metadata as text_metadata

from tbprobe.stats import SCALAR_NAMES

MANIFEST_TAG = "tbprobe/manifest"
MARGIN_NAMES = ("mean_minus_std", "mean_plus_std")

HISTOGRAM_METADATA = histogram_metadata.create_summary_metadata("", "").SerializeToString()
SCALAR_METADATA = scalar_metadata.create_summary_metadata("", "").SerializeToString()
IMAGE_METADATA = image_metadata.create_summary_metadata("", "").SerializeToString()
TEXT_METADATA = text_metadata.create_summary_metadata("", "").SerializeToString()
LAYOUT_METADATA = custom_scalar_metadata.create_summary_metadata().SerializeToString()


def encode_images(pixels: tf.Tensor) -> tf.Tensor:
    """`[k, h, w, c]` uint8 images -> the image plugin's `[width, height, png_0, ...]` strings."""
    shape = tf.shape(pixels)
    dimensions = tf.stack([tf.as_string(shape[2]), tf.as_string(shape[1])])
    # Compression level 1: several times faster than the default, PNGs a little larger.
    pngs = [tf.image.encode_png(pixels[i], compression=1) for i in range(pixels.shape[0])]
    return tf.concat([dimensions, tf.stack(pngs)], axis=0)


def make_write_fn(writer: Any, images_by_tag: dict[str, str | None]) -> Callable[..., None]:
    """A function `write(step, computed)` that writes one log step's summaries with `writer`.

    Args:
        writer: a `tf.summary` writer.
        images_by_tag: `{tag: "feature_maps" | "heatmap" | None}` for every probed output.
    """

    def write(step: tf.Tensor, computed: dict[str, dict[str, tf.Tensor]]) -> None:
        with writer.as_default(step=step), tf.summary.record_if(True):
            for tag, image in images_by_tag.items():
                values = computed[tag]
                tf.summary.write(
                    f"{tag}/activations", values["histogram"], metadata=HISTOGRAM_METADATA
                )
                scalars = dict(zip(SCALAR_NAMES, tf.unstack(values["scalars"]), strict=True))
                scalars["mean_minus_std"] = scalars["mean"] - scalars["std"]
                scalars["mean_plus_std"] = scalars["mean"] + scalars["std"]
                for name, value in scalars.items():
                    tf.summary.write(f"{tag}/{name}", value, metadata=SCALAR_METADATA)
                if image is not None:
                    tf.summary.write(f"{tag}/{image}", values["image"], metadata=IMAGE_METADATA)

    return write


def write_run_header(writer: Any, rows: list[ManifestRow], step: int) -> None:
    """Write the manifest text and the custom-scalars layout, at `step`."""
    with writer.as_default(step=step), tf.summary.record_if(True):
        tf.summary.write(MANIFEST_TAG, tf.constant(manifest_markdown(rows)), metadata=TEXT_METADATA)
        tf.summary.write(
            custom_scalar_metadata.CONFIG_SUMMARY_TAG,
            tf.constant(scalars_layout([row.tag for row in rows]).SerializeToString()),
            metadata=LAYOUT_METADATA,
        )


@dataclass(frozen=True)
class ManifestRow:
    """One probed output as listed in the manifest."""

    tag: str
    layer_class: str
    shape: tuple[int | None, ...]
    dtype: str
    image: str | None


def manifest_markdown(rows: list[ManifestRow]) -> str:
    """Markdown table of what is logged per probed output (TensorBoard's Text dashboard)."""
    scalars = ", ".join((*SCALAR_NAMES, *MARGIN_NAMES))
    lines = [
        f"tbprobe logs {len(rows)} outputs. Every one gets the histogram `activations` and the "
        f"scalars {scalars}.",
        "",
        "| tag | layer class | output shape | dtype | image |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        shape = "(" + ", ".join("None" if d is None else str(d) for d in row.shape) + ")"
        image = f"`{row.tag}/{row.image}`" if row.image else "-"
        lines.append(f"| `{row.tag}` | {row.layer_class} | {shape} | {row.dtype} | {image} |")
    return "\n".join(lines)


def scalars_layout(tags: list[str]) -> layout_pb2.Layout:
    """Custom-scalars layout: every layer's metric in one chart; mean +- std per layer."""
    overview = layout_pb2.Category(
        title="tbprobe: all layers",
        chart=[
            layout_pb2.Chart(
                title=name,
                multiline=layout_pb2.MultilineChartContent(tag=[rf".*/{name}$"]),
            )
            for name in SCALAR_NAMES
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
                            lower=f"{tag}/mean_minus_std",
                            upper=f"{tag}/mean_plus_std",
                        )
                    ]
                ),
            )
            for tag in tags
        ],
    )
    return layout_pb2.Layout(category=[overview, margins])
