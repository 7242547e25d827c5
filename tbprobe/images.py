"""Images of activations: feature-map grids (rank 4) and heatmaps (rank 2 to 4), as PNG.

Which image an output gets (`describe_image`): a rank-4 output gets a feature-map grid, unless its
layer is one of `NOT_SPATIAL` (an `EinsumDense` making `(batch, tokens, heads, dim)`, attention,
softmax, embedding), whose rank-4 output is no image: it gets a heatmap of tokens x (heads * dim).
A `Dense` keeps the rank of its input, so on a feature map (a ConvNeXt block's pointwise
projection) its output is a feature map too. Rank-2 and rank-3 outputs get heatmaps.

A feature-map grid tiles, for each shown sample, the first `max_channels` channels of a
`[batch, height, width, channels]` output in a near-square grid with 1-pixel separators. Each
channel is min-max normalized on its own (a constant channel becomes 0, never NaN; non-finite
pixels become 0) to a palette index 0..254; 255 marks separators and blank tiles. A heatmap
shows a rank-2 output as one image of samples x units, and a rank-3 output as one image of
time x features per shown sample, each normalized over the whole image.

The work is split where it is cheapest. On the device, inside the compiled log step, each
shown map is taken as its layer returns (`feature_map_maps`, `heatmap_maps`), and maps of one
kind and shape are normalized and shrunk together (`feature_map_tiles_of`, `heatmap_of`): few
ops per output, and only a small uint8 array leaves the device. On the host, numpy enlarges tiny images by an
integer factor (nearest neighbour) so that TensorBoard shows them at a visible size, arranges
the grid (`feature_map_grid`, `enlarge_heatmap`) and zlib writes the PNG (`image_strings`).

Sizes: `tf.summary.image` stores PNGs at full size, so the longer side is capped at `max_side`
(area downsampling). Images stay palette indices (one byte a pixel) until PNG encoding, where
`colormap_palette` gives the colors: a third of the bytes of RGB to compress, which is most of
the cost of an image.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tbprobe.options import DEFAULT_MAX_IMAGE_SIDE, check_cmap
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
    check_cmap(cmap)
    if cmap is None:
        return None
    import matplotlib

    colormap = matplotlib.colormaps[cmap]
    colors = np.round(colormap(np.linspace(0.0, 1.0, SEPARATOR))[:, :3] * 255).astype(np.uint8)
    return np.concatenate([colors, np.full((1, 3), 255, np.uint8)])


def feature_map_maps(
    x: tf.Tensor, max_channels: int = 32, max_samples: int = 1, channels_first: bool = False
) -> tf.Tensor:
    """The shown part of a rank-4 activation: float32 `[k, height, width, shown channels]`.

    Taken as the layer returns, it is all an image needs: maps of several outputs of one shape
    are then drawn together by one `feature_map_tiles_of` (fewer ops to trace and run).

    Args:
        x: `[batch, height, width, channels]` float tensor (`[batch, channels, height, width]`
            when `channels_first`); height, width and channels must be statically known.
        max_channels: channels shown per sample (the first ones).
        max_samples: samples shown (the first ones); one image each.
        channels_first: whether `x` is channels-first.
    """
    if channels_first:
        x = tf.transpose(x, [0, 2, 3, 1])
    samples, channels = int(x.shape[0]), int(x.shape[3])
    shown = min(channels, max_channels)
    maps = x if samples <= max_samples and shown == channels else x[:max_samples, :, :, :shown]
    return tf.cast(maps, tf.float32)


def feature_map_tiles_of(maps: tf.Tensor, max_side: int = DEFAULT_MAX_IMAGE_SIDE) -> tf.Tensor:
    """The device's part of feature-map grids: each map of `feature_map_maps` (of one output, or
    several stacked) normalized on its own and shrunk: uint8 `[k, tile_h, tile_w, channels]`,
    at the final size or smaller by an integer factor (`feature_map_grid` finishes them)."""
    return grid_tiles(_normalize(maps, axes=[1, 2]), max_side)


def grid_tiles(maps: tf.Tensor, max_side: int = DEFAULT_MAX_IMAGE_SIDE) -> tf.Tensor:
    """Values in [0, 1] to the palette indices of grid tiles, shrunk to fit `max_side`.

    Args:
        maps: `[k, height, width, tiles]` float tensor (static shape); each of the `tiles`
            channels becomes one tile of the grid that `feature_map_grid` arranges.
        max_side: cap on the longer side of the grid, in pixels.

    Returns:
        uint8 `[k, tile_h, tile_w, tiles]`.
    """
    height, width, shown = (int(d) for d in maps.shape[1:])
    rows, columns = _grid_shape(shown)
    tile_h, tile_w, _ = _fit(height, width, rows, columns, max_side)
    if (tile_h, tile_w) != (height, width):
        maps = tf.image.resize(maps, [tile_h, tile_w], method="area")
    return _to_index(maps)


def feature_map_grid(tiles: np.ndarray, max_side: int = DEFAULT_MAX_IMAGE_SIDE) -> np.ndarray:
    """Arrange `feature_map_tiles` in a near-square grid per sample, on the host.

    Args:
        tiles: uint8 `[k, tile_h, tile_w, channels]`.
        max_side: the cap `feature_map_tiles_of` was given (tiny grids are enlarged to
            `MIN_SIDE`).

    Returns:
        uint8 palette indices `[k, H, W]`, tiles separated by 1-pixel `SEPARATOR` lines.
    """
    count, height, width, shown = tiles.shape
    rows, columns = _grid_shape(shown)
    grow = _fit(height, width, rows, columns, max_side)[2]
    tiles = _enlarge(tiles, grow, grow)
    height, width = height * grow, width * grow
    grid = np.full((count, rows * (height + 1) - 1, columns * (width + 1) - 1), SEPARATOR, np.uint8)
    for channel in range(shown):
        row, column = divmod(channel, columns)
        top, left = row * (height + 1), column * (width + 1)
        grid[:, top : top + height, left : left + width] = tiles[..., channel]
    return grid


def heatmap_maps(x: tf.Tensor, max_samples: int = 1) -> tf.Tensor:
    """The shown part of a heatmap's activation: float32 `[k, height, width, 1]` (see
    `feature_map_maps`: maps of one shape are drawn together by `heatmap_of`).

    Args:
        x: `[batch, units]` float tensor, shown as one image of every sample (rows) by units
            (columns); or `[batch, time, features]`, one image of time (rows) by features per
            shown sample; or `[batch, time, heads, dim]`, shown as `[batch, time, heads * dim]`.
            Dimensions must be statically known.
        max_samples: images shown for a rank-3 or rank-4 output.
    """
    if x.shape.rank > 3:
        x = tf.reshape(x, [-1, int(x.shape[1]), math.prod(int(d) for d in x.shape[2:])])
    images = x[tf.newaxis] if x.shape.rank == 2 else x[:max_samples]
    return tf.cast(images, tf.float32)[..., tf.newaxis]


def heatmap_of(maps: tf.Tensor, max_side: int = DEFAULT_MAX_IMAGE_SIDE) -> tf.Tensor:
    """The device's part of heatmaps of `heatmap_maps` (of one output, or several stacked): each
    normalized over its whole image and shrunk per axis to fit `max_side`, uint8 `[k, H, W]`
    (`enlarge_heatmap` finishes them on the host)."""
    images = _normalize(maps, axes=[1, 2])
    height, width = int(images.shape[1]), int(images.shape[2])
    # Rows and columns are scaled on their own: 16 samples x 4096 units stays legible.
    target = (_fit(height, 1, 1, 1, max_side)[0], _fit(1, width, 1, 1, max_side)[1])
    if target != (height, width):
        images = tf.image.resize(images, target, method="area")
    return _to_index(images)[..., 0]


def enlarge_heatmap(images: np.ndarray, max_side: int = DEFAULT_MAX_IMAGE_SIDE) -> np.ndarray:
    """Enlarge tiny `heatmap` images to a visible size (nearest neighbour), on the host."""
    _, height, width = images.shape
    return _enlarge(
        images[..., np.newaxis],
        _fit(height, 1, 1, 1, max_side)[2],
        _fit(1, width, 1, 1, max_side)[2],
    )[..., 0]


def _grid_shape(shown: int) -> tuple[int, int]:
    columns = math.ceil(math.sqrt(shown))
    return math.ceil(shown / columns), columns


def _enlarge(images: np.ndarray, grow_h: int, grow_w: int) -> np.ndarray:
    """`[k, h, w, c]` images with each pixel repeated `grow_h` x `grow_w` times."""
    if grow_h > 1:
        images = images.repeat(grow_h, axis=1)
    if grow_w > 1:
        images = images.repeat(grow_w, axis=2)
    return images


def _fit(height: int, width: int, rows: int, columns: int, max_side: int) -> tuple[int, int, int]:
    """`(tile_h, tile_w, grow)`: tiles shrunk so that the grid's longer side is at most
    `max_side`, or left as they are and to be enlarged `grow` times to reach `MIN_SIDE`."""
    side = max(rows * (height + 1) - 1, columns * (width + 1) - 1)
    if side > max_side:
        shrink = math.ceil(side / max_side)
        return max(1, math.ceil(height / shrink)), max(1, math.ceil(width / shrink)), 1
    return height, width, max(1, MIN_SIDE // max(side, 1))


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


def image_strings(images: np.ndarray, palette: np.ndarray | None) -> list[bytes]:
    """Palette-index images -> the image plugin's `[width, height, png_0, ...]` strings.

    Args:
        images: uint8 `[k, h, w]` palette indices.
        palette: `[256, 3]` uint8 RGB colors of the indices, or None for grayscale PNGs.
    """
    count, height, width = images.shape
    return [str(width).encode(), str(height).encode()] + [
        encode_png(images[i], palette) for i in range(count)
    ]


def encode_png(image: np.ndarray, palette: np.ndarray | None) -> bytes:
    """An 8-bit palette PNG (grayscale when `palette` is None) of uint8 `[h, w]` indices.

    Rows carry PNG filter 0 and go through zlib at level 1: several times faster than the
    default level, files a little larger. zlib releases the GIL, and the image is one byte a
    pixel, a third of RGB's bytes to compress.
    """
    height, width = image.shape
    scanlines = np.zeros((height, width + 1), np.uint8)
    scanlines[:, 1:] = image
    color_type = 0 if palette is None else 3
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    chunks = [_png_chunk(b"IHDR", header)]
    if palette is not None:
        chunks.append(_png_chunk(b"PLTE", palette.tobytes()))
    chunks.append(_png_chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 1)))
    chunks.append(_png_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
