"""What a log step computes for each probed output, decided once from its layer and shape.

An `OutputPlan` says how an output is reduced (`tbprobe.stats.OutputSpec`: its shape, the axis
of its units for `dead_units`, the bounds of a saturating activation for `saturated`) and which
image it gets (`FEATURE_MAPS`, `HEATMAP` or none), and runs the image's two halves: the device
part inside the compiled step, the host part after it (see `tbprobe.images`). The attention
probabilities of an attention layer (`ProbedOutput.kind == ATTENTION`) are not reduced like
activations: they get entropies and the `ATTENTION` image (`tbprobe.attention`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tbprobe.attention import attention_maps
from tbprobe.images import (
    describe_image,
    enlarge_heatmap,
    feature_map_grid,
    feature_map_maps,
    feature_map_tiles_of,
    grid_tiles,
    heatmap_maps,
    heatmap_of,
    image_strings,
)
from tbprobe.options import LogOptions
from tbprobe.probing import ProbedOutput
from tbprobe.stats import OutputSpec
from tbprobe.tags import ATTENTION, FEATURE_MAPS

# Output ranges of the activations whose units can saturate, by Keras activation name.
SATURATING_ACTIVATIONS = {
    "sigmoid": (0.0, 1.0),
    "hard_sigmoid": (0.0, 1.0),
    "softmax": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
    "hard_tanh": (-1.0, 1.0),
}


@dataclass(frozen=True)
class OutputPlan:
    """How one probed output is logged.

    Attributes:
        output: the probed output.
        spec: its reductions' static description (None for attention probabilities).
        image: `FEATURE_MAPS`, `HEATMAP`, `ATTENTION` or None.
        channels_first: whether a rank-4 output is channels-first.
    """

    output: ProbedOutput
    spec: OutputSpec | None
    image: str | None
    channels_first: bool

    @property
    def attention(self) -> bool:
        """Whether the output is an attention layer's probabilities."""
        return self.output.kind == ATTENTION

    @property
    def image_tag(self) -> str:
        """The image's tag: `<tag>/<kind>`; attention's own tag is `<layer tag>/attention`."""
        return self.output.tag if self.attention else f"{self.output.tag}/{self.image}"

    def image_maps(self, x: tf.Tensor, options: LogOptions) -> tf.Tensor:
        """What the image needs of `x`, taken as the layer returns: the shown float maps.

        Maps of the same `image` and shape are drawn together (`draw_images`), so that a model
        of many same-shaped layers draws its images in a few ops, not a few per layer.
        """
        o = options
        if self.image == ATTENTION:
            return attention_maps(x, o.max_samples)
        if self.image == FEATURE_MAPS:
            return feature_map_maps(x, o.max_channels, o.max_samples, self.channels_first)
        return heatmap_maps(x, o.max_samples)

    def host_image(
        self, indices: np.ndarray, options: LogOptions, palette: np.ndarray | None
    ) -> list[bytes]:
        """The image plugin's strings from what `draw_images` returned for this output."""
        if self.image in (FEATURE_MAPS, ATTENTION):
            images = feature_map_grid(indices, options.max_image_side)
        else:
            images = enlarge_heatmap(indices, options.max_image_side)
        return image_strings(images, palette)


def draw_images(
    plans: list[OutputPlan], maps: dict[str, tf.Tensor], options: LogOptions
) -> dict[str, tf.Tensor]:
    """The device's part of every image, `{tag: uint8 palette indices}`: maps of one image kind
    and shape are concatenated along the samples and drawn by one pipeline, then split.

    Args:
        plans: the plans whose `image_maps` are in `maps`.
        maps: `{tag: image_maps(...)}`.
        options: the probe's options (`max_image_side`).
    """
    groups: dict[tuple[Any, ...], list[OutputPlan]] = {}
    for plan in plans:
        groups.setdefault((plan.image, *maps[plan.output.tag].shape[1:]), []).append(plan)
    drawn: dict[str, tf.Tensor] = {}
    for (kind, *_), members in groups.items():
        parts = [maps[plan.output.tag] for plan in members]
        stacked = parts[0] if len(parts) == 1 else tf.concat(parts, axis=0)
        if kind == ATTENTION:
            images = grid_tiles(stacked, options.max_image_side)
        elif kind == FEATURE_MAPS:
            images = feature_map_tiles_of(stacked, options.max_image_side)
        else:
            images = heatmap_of(stacked, options.max_image_side)
        counts = [int(part.shape[0]) for part in parts]
        pieces = [images] if len(parts) == 1 else tf.split(images, counts, axis=0)
        drawn.update(zip((plan.output.tag for plan in members), pieces, strict=True))
    return drawn


def plan_output(output: ProbedOutput, options: LogOptions) -> OutputPlan:
    """Decide, from the layer and the static shape, what is computed for `output`."""
    if output.kind == ATTENTION:
        drawable = options.images and None not in output.shape[1:]
        return OutputPlan(output, None, ATTENTION if drawable else None, False)
    rank = len(output.shape)
    channels_first = getattr(output.layer, "data_format", None) == "channels_first"
    if rank < 2:
        unit_axis = None
    else:
        unit_axis = 1 if channels_first and rank >= 3 else -1
    image = describe_image(output.shape, output.layer) if options.images else None
    spec = OutputSpec(unit_axis, saturation_bounds(output.layer))
    return OutputPlan(output, spec, image, channels_first and rank == 4)


def saturation_bounds(layer: Any) -> tuple[float, float] | None:
    """The output range of `layer`'s saturating activation, or None.

    Only layers whose output is their activation's output count: `Activation`, `Softmax`, and
    layers with an `activation` argument applied last (Dense, EinsumDense, convolutions).
    Recurrent layers, whose `activation` is applied inside, do not.
    """
    import keras

    if isinstance(layer, keras.layers.Softmax):
        return SATURATING_ACTIVATIONS["softmax"]
    if isinstance(layer, keras.layers.RNN) or not hasattr(layer, "activation"):
        return None
    name = getattr(layer.activation, "__name__", None)
    return SATURATING_ACTIVATIONS.get(name) if isinstance(name, str) else None
