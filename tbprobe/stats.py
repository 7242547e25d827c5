"""On-device reductions of one activation tensor: histogram buckets and health scalars.

`layer_statistics(x)` returns, for any float tensor:

* `histogram`: a `[buckets, 3]` float64 tensor of rows `(left_edge, right_edge, count)`, the
  format of TensorBoard's histogram plugin. `buckets` equal-width buckets span the finite values
  from min to max; the last bucket is closed on both sides. The counts sum to the number of
  finite elements. Edge cases follow `tensorboard.plugins.histogram.summary_v2`: no finite value
  (empty or all-NaN input) gives all zeros; a single distinct value gives every edge equal to it
  and the whole count in the last bucket.
* `sparsity`: fraction of elements with `abs(x) <= zero_tol` (0 for an empty tensor).
* `dead_units`: fraction of units (positions along `unit_axis`) with `abs(x) <= zero_tol` at every
  sample and position; the whole tensor is one unit when `unit_axis` is None; 0 when empty.
* `mean`, `std`: over the finite elements (population std); NaN when there is none.
* `nonfinite`: fraction of elements that are NaN or +-Inf (0 for an empty tensor).

Cost: a few passes over `x`, O(n) memory. `tf.summary.histogram` builds an `n x buckets` float64
one-hot instead (48x a ResNet50 forward pass, and out of memory on large activations). When
every element is finite (the common case) nothing is masked or copied. Moments are computed on
`x` rescaled by a power of two, so huge finite values do not overflow them.

`layer_statistics_numpy` is the numpy twin, used to test the op without a writer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

DEFAULT_BUCKETS = 30
SCALAR_NAMES = ("sparsity", "dead_units", "mean", "std", "nonfinite")


def layer_statistics(
    x: Any,
    buckets: int = DEFAULT_BUCKETS,
    zero_tol: float = 0.0,
    unit_axis: int | None = -1,
) -> dict[str, tf.Tensor]:
    """Histogram and health scalars of one activation tensor, computed in-graph.

    Args:
        x: float tensor of any shape (float16/bfloat16 are computed in float32).
        buckets: number of histogram buckets, >= 1.
        zero_tol: an element counts as zero when `abs(x) <= zero_tol`.
        unit_axis: axis indexing units (channels) for `dead_units`; None: one unit.

    Returns:
        `{"histogram": [buckets, 3] float64, "sparsity", "dead_units", "mean", "std",
        "nonfinite": float32 scalars}`.
    """
    x = tf.convert_to_tensor(x)
    dtype = tf.float64 if x.dtype == tf.float64 else tf.float32
    x = tf.cast(x, dtype)
    size = tf.size(x, out_type=tf.int64)
    denominator = tf.cast(tf.maximum(size, 1), tf.float64)

    is_zero = tf.abs(x) <= tf.cast(zero_tol, dtype)
    sparsity = tf.cast(tf.math.count_nonzero(is_zero), tf.float64) / denominator
    # An empty output has no evidence of dead units (reduce_all over nothing would say all are).
    dead_units = tf.cond(
        size > 0, lambda: _dead_units(is_zero, unit_axis), lambda: tf.zeros([], tf.float64)
    )

    flat = tf.reshape(x, [-1])
    # The common case, every element finite, needs no masked copy.
    finite = tf.cond(
        tf.reduce_all(tf.math.is_finite(flat)),
        lambda: flat,
        lambda: tf.boolean_mask(flat, tf.math.is_finite(flat)),
    )
    count = tf.size(finite, out_type=tf.int64)
    nonfinite = tf.cast(size - count, tf.float64) / denominator
    histogram, mean, std = tf.cond(
        count > 0,
        lambda: _finite_summary(finite, count, buckets),
        lambda: (
            tf.zeros([buckets, 3], tf.float64),
            tf.constant(np.nan, dtype),
            tf.constant(np.nan, dtype),
        ),
    )
    return {
        "histogram": histogram,
        "sparsity": tf.cast(sparsity, tf.float32),
        "dead_units": tf.cast(dead_units, tf.float32),
        "mean": tf.cast(mean, tf.float32),
        "std": tf.cast(std, tf.float32),
        "nonfinite": tf.cast(nonfinite, tf.float32),
    }


def _dead_units(is_zero: tf.Tensor, unit_axis: int | None) -> tf.Tensor:
    rank = is_zero.shape.rank
    if unit_axis is None or rank == 0:
        return tf.cast(tf.reduce_all(is_zero), tf.float64)
    axis = unit_axis % rank
    other_axes = [a for a in range(rank) if a != axis]
    dead = tf.reduce_all(is_zero, axis=other_axes)
    units = tf.maximum(tf.size(dead, out_type=tf.int64), 1)
    return tf.cast(tf.math.count_nonzero(dead), tf.float64) / tf.cast(units, tf.float64)


def _finite_summary(
    finite: tf.Tensor, count: tf.Tensor, buckets: int
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    low = tf.reduce_min(finite)
    high = tf.reduce_max(finite)
    # Moments of finite / scale, scale a power of two near max |x|: exact rescaling, and no
    # overflow for huge finite values (a NaN through max-pooling becomes -3.4e38).
    max_abs = tf.maximum(tf.abs(low), tf.abs(high))
    exponent = tf.clip_by_value(tf.math.ceil(tf.math.log(max_abs) / np.log(2.0)) - 1, -100, 100)
    scale = tf.where(max_abs > 0, tf.pow(tf.constant(2.0, finite.dtype), exponent), 1)
    scaled = finite / scale
    mean = tf.reduce_mean(scaled)
    std = tf.sqrt(tf.reduce_mean(tf.square(scaled - mean))) * scale
    histogram = tf.cond(
        high > low,
        lambda: _spread_histogram(scaled, low, high, scale, buckets),
        lambda: _single_value_histogram(high, count, buckets),
    )
    return histogram, mean * scale, std


def _spread_histogram(
    scaled: tf.Tensor, low: tf.Tensor, high: tf.Tensor, scale: tf.Tensor, buckets: int
) -> tf.Tensor:
    # Bucketing `scaled` gives the buckets of the unscaled values (power-of-two rescaling is
    # exact), and its range cannot overflow where high - low would.
    counts = tf.histogram_fixed_width(scaled, tf.stack([low / scale, high / scale]), nbins=buckets)
    low64, high64 = tf.cast(low, tf.float64), tf.cast(high, tf.float64)
    # As TensorBoard does: the last edge is exactly the maximum, whatever linspace rounds to.
    edges = tf.concat([tf.linspace(low64, high64, buckets + 1)[:-1], [high64]], axis=0)
    return tf.stack([edges[:-1], edges[1:], tf.cast(counts, tf.float64)], axis=1)


def _single_value_histogram(value: tf.Tensor, count: tf.Tensor, buckets: int) -> tf.Tensor:
    edges = tf.fill([buckets], tf.cast(value, tf.float64))
    counts = tf.concat([tf.zeros([buckets - 1], tf.float64), [tf.cast(count, tf.float64)]], 0)
    return tf.stack([edges, edges, counts], axis=1)


def layer_statistics_numpy(
    x: Any,
    buckets: int = DEFAULT_BUCKETS,
    zero_tol: float = 0.0,
    unit_axis: int | None = -1,
) -> dict[str, Any]:
    """Numpy twin of `layer_statistics` (same definitions, same bucketing rule)."""
    x = np.asarray(x)
    x = x.astype(np.float64 if x.dtype == np.float64 else np.float32)
    size = x.size
    is_zero = np.abs(x) <= zero_tol
    if size == 0:
        dead = 0.0
    elif unit_axis is None or x.ndim == 0:
        dead = float(is_zero.all())
    else:
        axis = unit_axis % x.ndim
        other = tuple(a for a in range(x.ndim) if a != axis)
        per_unit = is_zero.all(axis=other)
        dead = float(per_unit.sum() / max(per_unit.size, 1))
    finite = x[np.isfinite(x)]
    result: dict[str, Any] = {
        "sparsity": float(is_zero.sum() / max(size, 1)),
        "dead_units": dead,
        "nonfinite": float((size - finite.size) / max(size, 1)),
        "mean": float(finite.mean(dtype=np.float64)) if finite.size else float("nan"),
        "std": float(finite.std(dtype=np.float64)) if finite.size else float("nan"),
    }
    histogram = np.zeros((buckets, 3))
    if finite.size:
        low, high = finite.min(), finite.max()
        if high > low:
            # tf.histogram_fixed_width's rule, floor((max(v, low) - low) / step) clamped,
            # applied to the values rescaled by a power of two, as layer_statistics does.
            max_abs = max(abs(low), abs(high))
            scale = x.dtype.type(2.0 ** np.clip(np.ceil(np.log2(max_abs)) - 1, -100, 100))
            scaled, low_s = finite / scale, low / scale
            step = float(high / scale - low_s) / buckets
            offsets = (np.maximum(scaled, low_s) - low_s).astype(np.float64)
            index = np.minimum(offsets / step, buckets - 1)
            counts = np.bincount(index.astype(np.int64), minlength=buckets)
            edges = np.linspace(float(low), float(high), buckets + 1)
            edges[-1] = float(high)
            histogram = np.stack([edges[:-1], edges[1:], counts], axis=1)
        else:
            histogram[:, :2] = float(high)
            histogram[-1, 2] = finite.size
    result["histogram"] = histogram
    return result
