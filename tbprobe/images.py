"""Images of activations: feature-map grids (rank 4) and heatmaps (rank 2 to 4), as uint8.

Which image an output gets (`describe_image`): a rank-4 output gets a feature-map grid, unless its
layer is one of `NOT_SPATIAL` (an `EinsumDense` making `(batch, tokens, heads, dim)`, attention,
softmax, embedding), whose rank-4 output is no image: it gets a heatmap of tokens x (heads * dim).
A `Dense` keeps the rank of its input, so on a feature map (a ConvNeXt block's pointwise
projection) its output is a feature map too. Rank-2 and rank-3 outputs get heatmaps.

`feature_map_grid` tiles, for each shown sample, the first `max_channels` channels of a
`[batch, height, width, channels]` output in a near-square grid with 1-pixel separators. Each
channel is min-max normalized on its own (a constant channel becomes 0, never NaN; non-finite
pixels become 0) to a palette index 0..254; 255 marks separators and blank tiles. `heatmap`
shows a rank-2 output as one image of samples x units, and a rank-3 output as one image of
time x features per shown sample, each normalized over the whole image.

Sizes: `tf.summary.image` stores PNGs at full size, so the longer side is capped at `max_side`
(area downsampling); tiny images are enlarged by an integer factor (nearest neighbour) so that
TensorBoard shows them at a visible size. All shapes are static, so the result traces once.

Images stay palette indices (one byte a pixel) until PNG encoding, where `colormap_palette` gives
the colors (see `encode_png_images`): a third of the bytes of RGB to filter and
compress, which is most of the cost of an image.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tbprobe.options import DEFAULT_MAX_IMAGE_SIDE
from tbprobe.tags import FEATURE_MAPS, HEATMAP

MIN_SIDE = 128
SEPARATOR = 255
NOT_SPATIAL = (
    keras.layers.EinsumDense,
    keras.layers.Embedding,
    keras.layers.MultiHeadAttention,
    keras.layers.Softmax,
)
"""Layer classes whose rank-4 outputs are projections or probabilities, never feature maps."""


def colormap_palette(cmap: str | None) -> np.ndarray | None:
    """`[256, 3]` uint8 RGB palette: 255 colors of a matplotlib colormap, then white.

    Index 255 is the separator color. Returns None for `cmap=None` (grayscale images).

    Raises:
        ValueError: `cmap` is not a matplotlib colormap name.
    """
    if cmap is None:
        return None
    import matplotlib

    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(
            f"Invalid value for argument `cmap`. Received: cmap={cmap!r}. Expected a matplotlib "
            "colormap name such as 'viridis', 'magma', 'coolwarm' or 'gray' (all names: "
            "list(matplotlib.colormaps)), or None for grayscale."
        ) from None
    colors = np.round(colormap(np.linspace(0.0, 1.0, SEPARATOR))[:, :3] * 255).astype(np.uint8)
    return np.concatenate([colors, np.full((1, 3), 255, np.uint8)])


def feature_map_grid(
    x: tf.Tensor,
    max_channels: int = 32,
    max_samples: int = 1,
    channels_first: bool = False,
    max_side: int = DEFAULT_MAX_IMAGE_SIDE,
) -> tf.Tensor:
    """Channel grids of a rank-4 activation.

    Args:
        x: `[batch, height, width, channels]` float tensor (`[batch, channels, height, width]`
            when `channels_first`); height, width and channels must be statically known.
        max_channels: channels shown per sample (the first ones).
        max_samples: samples shown (the first ones); one image each.
        channels_first: whether `x` is channels-first.
        max_side: cap on the longer image side, in pixels.

    Returns:
        uint8 palette indices `[min(batch, max_samples), H, W]`.
    """
    if channels_first:
        x = tf.transpose(x, [0, 2, 3, 1])
    shown = min(int(x.shape[3]), max_channels)
    maps = _normalize(tf.cast(x[:max_samples, :, :, :shown], tf.float32), axes=[1, 2])
    return tile_grid(maps, max_side)


def tile_grid(maps: tf.Tensor, max_side: int = DEFAULT_MAX_IMAGE_SIDE) -> tf.Tensor:
    """One near-square grid image per sample of the channels of `maps`, as palette indices.

    Args:
        maps: `[k, height, width, tiles]` float tensor of values in [0, 1] (static shape); each
            of the `tiles` channels becomes one tile, separated by 1-pixel lines.
        max_side: cap on the longer image side, in pixels.

    Returns:
        uint8 palette indices `[k, H, W]`.
    """
    height, width, shown = (int(d) for d in maps.shape[1:])
    columns = math.ceil(math.sqrt(shown))
    rows = math.ceil(shown / columns)
    tile_h, tile_w = _fit(height, width, rows, columns, max_side)
    if (tile_h, tile_w) != (height, width):
        maps = tf.image.resize(maps, [tile_h, tile_w], method="area")
    # [k, h, w, c] -> [k, c, h, w] tiles, padded to rows * columns with blank tiles.
    tiles = tf.transpose(_to_index(maps), [0, 3, 1, 2])
    tiles = tf.pad(
        tiles, [[0, 0], [0, rows * columns - shown], [0, 1], [0, 1]], constant_values=SEPARATOR
    )
    grid = tf.reshape(tiles, [-1, rows, columns, tile_h + 1, tile_w + 1])
    grid = tf.transpose(grid, [0, 1, 3, 2, 4])
    grid = tf.reshape(grid, [-1, rows * (tile_h + 1), columns * (tile_w + 1)])
    return grid[:, :-1, :-1]


def heatmap(
    x: tf.Tensor,
    max_samples: int = 1,
    max_side: int = DEFAULT_MAX_IMAGE_SIDE,
) -> tf.Tensor:
    """Heatmap images of a rank-2, rank-3 or rank-4 activation.

    Args:
        x: `[batch, units]` float tensor, shown as one image of every sample (rows) by units
            (columns); or `[batch, time, features]`, one image of time (rows) by features per
            shown sample; or `[batch, time, heads, dim]`, shown as `[batch, time, heads * dim]`.
            Dimensions must be statically known.
        max_samples: images shown for a rank-3 output.
        max_side: cap on each image side, in pixels.

    Returns:
        uint8 palette indices `[k, H, W]`.
    """
    if x.shape.rank > 3:
        x = tf.reshape(x, [-1, int(x.shape[1]), math.prod(int(d) for d in x.shape[2:])])
    images = x[tf.newaxis] if x.shape.rank == 2 else x[:max_samples]
    images = _normalize(tf.cast(images, tf.float32)[..., tf.newaxis], axes=[1, 2])
    height, width = int(images.shape[1]), int(images.shape[2])
    # Rows and columns are scaled on their own: 16 samples x 4096 units stays legible.
    target = (_fit(height, 1, 1, 1, max_side)[0], _fit(1, width, 1, 1, max_side)[1])
    if target != (height, width):
        images = tf.image.resize(images, target, method="area")
    return _to_index(images)[..., 0]


def _fit(height: int, width: int, rows: int, columns: int, max_side: int) -> tuple[int, int]:
    """Tile size so that the whole grid's longer side is within [MIN_SIDE, max_side] if possible."""
    side = max(rows * (height + 1) - 1, columns * (width + 1) - 1)
    if side > max_side:
        shrink = math.ceil(side / max_side)
        return max(1, math.ceil(height / shrink)), max(1, math.ceil(width / shrink))
    grow = max(1, MIN_SIDE // max(side, 1))
    return height * grow, width * grow


def _normalize(maps: tf.Tensor, axes: list[int]) -> tf.Tensor:
    """Min-max normalize to [0, 1] over `axes`; constant or non-finite values become 0."""
    finite = tf.math.is_finite(maps)
    low = tf.reduce_min(tf.where(finite, maps, np.inf), axis=axes, keepdims=True)
    high = tf.reduce_max(tf.where(finite, maps, -np.inf), axis=axes, keepdims=True)
    return tf.where(finite, tf.math.divide_no_nan(maps - low, high - low), 0.0)


def _to_index(maps: tf.Tensor) -> tf.Tensor:
    """[0, 1] floats to palette indices 0..254 (255 is the separator)."""
    return tf.cast(tf.round(maps * (SEPARATOR - 1)), tf.uint8)


def describe_image(shape: tuple[Any, ...], layer: Any = None) -> str | None:
    """Which image an output gets: `FEATURE_MAPS`, `HEATMAP` or None.

    Args:
        shape: the output shape (`None` for unknown dimensions).
        layer: the Keras layer that made it; a rank-4 output of a `NOT_SPATIAL` layer gets a
            heatmap instead of feature maps.
    """
    rank = len(shape)
    if rank == 4 and all(d is not None for d in shape[1:]):
        return HEATMAP if isinstance(layer, NOT_SPATIAL) else FEATURE_MAPS
    if rank == 2 and all(d is not None for d in shape):
        return HEATMAP
    if rank == 3 and all(d is not None for d in shape[1:]):
        return HEATMAP
    return None


def encode_png_images(indices: tf.Tensor, palette: np.ndarray | None) -> tf.Tensor:
    """Palette-index images -> the image plugin's `[width, height, png_0, ...]` strings, in-graph.

    Args:
        indices: `[k, h, w]` uint8 tensor with a static shape.
        palette: `[256, 3]` uint8 RGB colors of the indices, or None for grayscale PNGs.

    Returns:
        A string vector: width, height, then one PNG per image.
    """
    count, height, width = (int(d) for d in indices.shape)
    # Compression level 1: several times faster than the default, files a little larger.
    pngs = [tf.image.encode_png(indices[i, :, :, tf.newaxis], compression=1) for i in range(count)]
    if palette is not None:
        header = tf.constant(_palette_png_header(width, height, palette))
        pngs = [tf.strings.join([header, tf.strings.substr(png, 33, -1)]) for png in pngs]
    return tf.stack([tf.constant(str(width)), tf.constant(str(height)), *pngs])


def _palette_png_header(width: int, height: int, palette: np.ndarray) -> bytes:
    """PNG signature, IHDR of an 8-bit palette image, and PLTE chunk.

    An 8-bit grayscale PNG and an 8-bit palette PNG store identical IDAT bytes (one byte a
    pixel), so swapping the grayscale PNG's first 33 bytes (signature and IHDR) for these turns
    it into a colored image, with TensorFlow's encoder doing all the compression work.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"PLTE", palette.tobytes())


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
