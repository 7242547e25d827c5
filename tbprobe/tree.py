"""`probe_tree`: what tbprobe can probe in a model, as an indented table like `model.summary()`.

One row per probed output: the layer path's last part indented by its depth (so a block's
sublayers sit under it), the layer class, the output shape, and what a log step writes for it.
It answers "what is the path of that projection?" without reading the model's source::

    layer                  class               output shape     logged
    ---------------------------------------------------------------------------------------
    block_0                Block               (None, 5, 8)     histogram, scalars, heatmap
      attention            MultiHeadAttention  (None, 5, 8)     histogram, scalars, heatmap
      attention/attention  MultiHeadAttention  (None, 2, 5, 5)  attention image, entropy
        query              EinsumDense         (None, 5, 2, 4)  histogram, scalars, heatmap
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tbprobe.images import describe_image
from tbprobe.probing import ProbedOutput, select_layers
from tbprobe.selection import LayerSpec, layer_paths
from tbprobe.tags import ATTENTION

INDENT = "  "


def probe_tree(
    model: Any,
    sample: Any = None,
    layers: LayerSpec | Iterable[LayerSpec] | None = None,
    depth: int | None = None,
) -> str:
    """An indented table of the outputs `layers=` and `depth=` select, and what is logged.

    Args:
        model: a built `keras.Model`.
        sample: an input batch; needed only for a subclassed model whose input shape Keras did
            not record.
        layers: as for `tbprobe.select_layers`; None lists every probe-able output.
        depth: as for `tbprobe.select_layers`; None lists every level.

    Returns:
        The table as a string, a header row then one row per probed output, a layer above its
        sublayers, calls and outputs of one layer in call order.

    Raises:
        ValueError: as for `tbprobe.select_layers`.

    Example:
        >>> print(tbprobe.probe_tree(model, depth=2))
    """
    outputs = select_layers(model, layers, sample, depth)
    order = {path: i for i, path in enumerate(layer_paths(model))}  # model checked above
    outputs = sorted(outputs, key=lambda out: order[out.path])  # stable: call order kept
    rows = [("layer", "class", "output shape", "logged")]
    rows += [_row(out) for out in outputs]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in rows
    ]
    rule = "-" * max(len(line) for line in lines)
    return "\n".join([lines[0], rule, *lines[1:], rule, f"{len(outputs)} probed outputs"])


def _row(output: ProbedOutput) -> tuple[str, str, str, str]:
    parent = output.path.rsplit("/", 1)[0] + "/" if "/" in output.path else ""
    name = INDENT * output.path.count("/") + output.tag[len(parent) :]
    shape = "(" + ", ".join("None" if d is None else str(d) for d in output.shape) + ")"
    return name, type(output.layer).__name__, shape, logged(output)


def logged(output: ProbedOutput) -> str:
    """What a log step writes for `output`, in words (images on)."""
    if output.kind == ATTENTION:
        return "attention image, entropy"
    image = describe_image(output.shape, output.layer)
    return "histogram, scalars" + (f", {image.replace('_', ' ')}" if image else "")
