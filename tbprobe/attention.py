"""Attention probabilities on the device: normalized entropy and heatmap grids.

Inputs are the probabilities an attention layer computes, `[batch, heads, queries, keys]`, each
query's row summing to 1 over the keys it may attend, and optionally the key mask (True = the
query may attend that key), broadcastable to `[batch, queries, keys]` as Keras's
`MultiHeadAttention` takes it.

`attention_entropy` gives the entropy of each query's distribution over its unmasked keys,
divided by log(number of unmasked keys): 0 when a query looks at a single key (one-hot), 1
when it spreads evenly. A query with at most one unmasked key counts as 0. An attention layer
whose entropy falls towards 0 during training is collapsing, a known sign of unstable
transformer training (Zhai et al. 2023, "Stabilizing Transformer Training by Preventing
Attention Entropy Collapse").

`attention_maps` takes, per shown sample, one queries x keys map per head: the tiles of a grid,
drawn by `tbprobe.images.grid_tiles` (on the device) and `feature_map_grid` (on the host). The
probabilities are absolute (0..1), so, unlike feature maps, no tile is normalized on its own:
0 is the palette's first color and 1 its last. All shapes are static; nothing loops in Python
over elements.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf


def attention_entropy(probs: tf.Tensor, key_mask: Any = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Normalized entropy of attention distributions: the mean, and the lowest head's mean.

    Args:
        probs: `[batch, heads, queries, keys]` float tensor of attention probabilities.
        key_mask: None (every key attended), or a bool/int tensor broadcastable to
            `[batch, queries, keys]`; True (nonzero) where the query may attend the key.

    Returns:
        `(mean, min_head)` float32 scalars in [0, 1]: the normalized entropy averaged over
        batch, heads and queries; and the smallest over heads of the average over batch and
        queries.

    Example:
        >>> mean, lowest = attention_entropy(tf.fill([1, 2, 3, 4], 0.25))  # uniform: 1.0, 1.0
    """
    probs = tf.cast(probs, tf.float32)
    if key_mask is None:
        mask = tf.ones_like(probs)
    else:
        mask = tf.cast(tf.cast(key_mask, tf.bool), tf.float32)[:, tf.newaxis]  # heads axis
        mask = tf.broadcast_to(mask, tf.shape(probs))
    attended = probs * mask
    # xlogy(0, 0) = 0: keys with no probability add nothing.
    entropy = -tf.reduce_sum(tf.math.xlogy(attended, attended), axis=-1)
    keys = tf.reduce_sum(mask, axis=-1)
    normalized = tf.where(keys > 1, tf.math.divide_no_nan(entropy, tf.math.log(keys)), 0.0)
    per_head = tf.reduce_mean(normalized, axis=[0, 2])
    return tf.reduce_mean(per_head), tf.reduce_min(per_head)


def attention_maps(probs: tf.Tensor, max_samples: int = 1) -> tf.Tensor:
    """The shown probabilities, float32 `[k, queries, keys, heads]` in [0, 1]: the heads become
    tiles. Maps of several layers of one shape are drawn together by one `grid_tiles`.

    Args:
        probs: `[batch, heads, queries, keys]` float tensor of probabilities (static heads,
            queries and keys).
        max_samples: samples shown (the first ones); one image each.

    Returns:
        Probabilities clipped to [0, 1], non-finite values 0: absolute values, so that, unlike
        feature maps, no tile is normalized on its own (0 is the palette's first color, 1 its
        last).
    """
    maps = tf.cast(probs[:max_samples], tf.float32)
    maps = tf.where(tf.math.is_finite(maps), tf.clip_by_value(maps, 0.0, 1.0), 0.0)
    return tf.transpose(maps, [0, 2, 3, 1])
