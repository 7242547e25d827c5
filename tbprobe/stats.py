"""Reductions of one activation tensor: histogram buckets and health scalars.

For a float tensor `x`, tbprobe reports:

* a histogram: `buckets` equal-width buckets spanning the finite values from their exact min to
  their exact max, the last bucket closed on both sides, counts summing to the number of finite
  elements; written as TensorBoard's `[buckets, 3]` rows `(left_edge, right_edge, count)` by
  `histogram_rows`, with TensorBoard's edge cases (no finite value: all zeros; one distinct
  value: every edge equal to it, the whole count in the last bucket);
* `sparsity`: fraction of elements with `abs(x) <= zero_tol` (0 for an empty tensor);
* `dead_units`: fraction of units (positions along `unit_axis`) with `abs(x) <= zero_tol` at every
  sample and position; the whole tensor is one unit when `unit_axis` is None; 0 when empty;
* `mean`, `std`: over the finite elements (population std); NaN when there is none;
* `nonfinite`: fraction of elements that are NaN or +-Inf (0 for an empty tensor).

`layer_reductions(x)` is the fast in-graph version, with no branch and no copy of `x`: four
full reductions (min, max, sum, sum of squares) and one zero mask whose per-unit counts come
from a matrix product (a column reduction costs twice as much). `std` comes from one pass,
`sqrt(E[x^2] - E[x]^2)`, accurate to about `1e-3 * |mean|` when `std` is tiny next to `|mean|`.
Buckets are counted on a sample of about `histogram_sample` elements: whole positions (every
channel) taken at a fixed stride coprime to every other dimension, so that rows, columns and
samples are covered evenly; counts are scaled to the number of elements. Bucketing costs ~10x a
reduction per element, so bucketing every element of every layer would cost more than the
forward pass itself; `histogram_sample=None` does it anyway. (`tf.summary.histogram` builds an
`n x buckets` float64 one-hot instead: 48x a ResNet50 forward pass, and out of memory on large
tensors.)

Its results hold only when every element is finite and the sum of squares cannot overflow; the
`exact` entry says so. Otherwise `layer_reductions_exact(x)` gives them: it masks the finite
values, rescales them by a power of two and buckets all of them.

Both return a vector laid out as `FIELDS` followed by the bucket counts, so that a whole model's
results leave the device as one matrix. `layer_statistics_numpy` is the numpy twin.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from tbprobe.options import DEFAULT_BUCKETS, DEFAULT_HISTOGRAM_SAMPLE
from tbprobe.tags import SCALAR_NAMES

FIELDS = (*SCALAR_NAMES, "low", "high", "exact")


def sample_plan(shape: tuple[int, ...], unit_axis: int | None, cap: int | None) -> tuple[int, int]:
    """How the histogram sample is taken: `(width, stride)`.

    The tensor is viewed as rows of `width` contiguous elements (a whole position, every unit,
    when units are the last axis; single elements otherwise) and every `stride`-th row is kept,
    at most about `cap` elements in all: contiguous reads, every channel in every kept row.
    """
    rank = len(shape)
    if rank >= 2 and _unit_index(rank, unit_axis) == rank - 1:
        return shape[-1], sample_stride(
            shape[:-1], None if cap is None else max(1, cap // shape[-1])
        )
    return 1, sample_stride(shape, cap)


def sample_stride(shape: tuple[int, ...], cap: int | None) -> int:
    """Stride of the histogram sample of a tensor of `shape`: 1 means every element.

    The smallest stride that keeps at most `cap` elements and shares no factor with any
    dimension, so that strided positions cycle through every channel, row and column.
    """
    size = math.prod(shape)
    if cap is None or size <= cap:
        return 1
    stride = max(2, -(-size // cap))
    while any(math.gcd(stride, d) > 1 for d in shape if d > 1):
        stride += 1
    return stride


def layer_reductions(
    x: tf.Tensor,
    buckets: int = DEFAULT_BUCKETS,
    zero_tol: float = 0.0,
    unit_axis: int | None = -1,
    histogram_sample: int | None = DEFAULT_HISTOGRAM_SAMPLE,
) -> tf.Tensor:
    """Fast reductions of one activation, valid when its `exact` field is 1.

    Args:
        x: float tensor with a static shape (float16/bfloat16 are computed in float32).
        buckets: number of histogram buckets, >= 1.
        zero_tol: an element counts as zero when `abs(x) <= zero_tol`.
        unit_axis: axis indexing units (channels) for `dead_units`; None: one unit.
        histogram_sample: most elements bucketed; None: all of them.

    Returns:
        float64 vector `[len(FIELDS) + buckets]`: `FIELDS` values, then bucket counts.
    """
    x, shape = _as_float(x)
    size = math.prod(shape)
    if size == 0:
        return _empty(buckets)
    low, high, total = tf.reduce_min(x), tf.reduce_max(x), tf.reduce_sum(x)
    sparsity, dead_units = _zero_stats(x, zero_tol, unit_axis)
    mean = total / size
    std = tf.sqrt(tf.maximum(2 * tf.nn.l2_loss(x) / size - mean * mean, 0))
    width, stride = sample_plan(shape, unit_axis, histogram_sample)
    sample = tf.reshape(tf.reshape(x, [-1, width])[::stride], [-1])
    # histogram_fixed_width rejects NaN; these results are discarded then anyway (not exact).
    sample = tf.where(tf.math.is_finite(sample), sample, 0.0)
    counts = _bucket_counts(sample, low, high, buckets) * (size / int(sample.shape[0]))
    # Valid when the sum is finite (no NaN or Inf) and squares cannot overflow.
    max_abs = tf.cast(tf.maximum(tf.abs(low), tf.abs(high)), tf.float64)
    limit = float(np.finfo(x.dtype.as_numpy_dtype).max) / (4 * size)
    exact = tf.logical_and(tf.math.is_finite(total), max_abs * max_abs < limit)
    exact = tf.cast(exact, x.dtype)
    return _pack([sparsity, dead_units, mean, std, 0.0, low, high, exact], counts)


def layer_reductions_exact(
    x: tf.Tensor,
    buckets: int = DEFAULT_BUCKETS,
    zero_tol: float = 0.0,
    unit_axis: int | None = -1,
) -> tf.Tensor:
    """Reductions of one activation that may hold NaN, Inf or huge values; every element
    bucketed. Same layout as `layer_reductions`, with `exact` always 1."""
    x, shape = _as_float(x)
    size = math.prod(shape)
    if size == 0:
        return _empty(buckets)
    sparsity, dead_units = _zero_stats(x, zero_tol, unit_axis)
    flat = tf.reshape(x, [-1])
    finite = tf.boolean_mask(flat, tf.math.is_finite(flat))
    count = tf.size(finite)
    low, high = tf.reduce_min(finite), tf.reduce_max(finite)
    # Moments of finite / scale, scale a power of two near max |x|: exact rescaling, and no
    # overflow for huge finite values (a NaN through max-pooling becomes -3.4e38).
    max_abs = tf.maximum(tf.abs(low), tf.abs(high))
    exponent = tf.clip_by_value(tf.math.ceil(tf.math.log(max_abs) / np.log(2.0)) - 1, -100, 100)
    scale = tf.where(max_abs > 0, tf.pow(tf.constant(2.0, x.dtype), exponent), 1)
    scaled = finite / scale
    mean = tf.reduce_mean(scaled)
    std = tf.sqrt(tf.reduce_mean(tf.square(scaled - mean))) * scale
    counts = _bucket_counts(scaled, low / scale, high / scale, buckets)
    nonfinite = tf.cast(size - count, x.dtype) / size
    return _pack([sparsity, dead_units, mean * scale, std, nonfinite, low, high, 1.0], counts)


def histogram_rows(counts: np.ndarray, low: float, high: float) -> np.ndarray:
    """TensorBoard's `[k, 3]` histogram rows `(left, right, count)` from bucket counts."""
    counts = np.asarray(counts, np.float64)
    buckets = counts.size
    if not counts.sum() or not (np.isfinite(low) and np.isfinite(high)):
        return np.zeros((buckets, 3))
    if high <= low:
        rows = np.zeros((buckets, 3))
        rows[:, :2] = high
        rows[-1, 2] = counts.sum()
        return rows
    edges = np.linspace(low, high, buckets + 1)
    edges[-1] = high  # as TensorBoard does: exactly the maximum, whatever linspace rounds to
    return np.stack([edges[:-1], edges[1:], counts], axis=1)


def _as_float(x: Any) -> tuple[tf.Tensor, tuple[int, ...]]:
    x = tf.convert_to_tensor(x)
    if not x.shape.is_fully_defined():
        raise ValueError(f"tbprobe's reductions need a static shape. Received: {x.shape}.")
    return tf.cast(x, tf.float64 if x.dtype == tf.float64 else tf.float32), tuple(x.shape)


def _unit_index(rank: int, unit_axis: int | None) -> int | None:
    return None if unit_axis is None or rank == 0 else unit_axis % rank


def _zero_stats(
    x: tf.Tensor, zero_tol: float, unit_axis: int | None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Sparsity and dead-unit fraction, from the number of zeros of each unit."""
    shape = tuple(x.shape)
    size = math.prod(shape)
    unit = _unit_index(len(shape), unit_axis)
    units = 1 if unit is None else shape[unit]
    positions = size // units
    is_zero = tf.equal(x, 0) if zero_tol == 0 else tf.abs(x) <= zero_tol
    if unit in (None, len(shape) - 1) and positions < 2**24:
        # Column sums of the [positions, units] mask as a matrix product: as fast as one full
        # reduction, where a column reduction costs ~2x; float32 sums of 0/1 are exact < 2^24.
        mask = tf.reshape(tf.cast(is_zero, tf.float32), [positions, units])
        per_unit = tf.matmul(tf.ones([1, positions]), mask)[0]
    else:
        axes = [a for a in range(len(shape)) if a != unit]
        per_unit = tf.reduce_sum(tf.cast(is_zero, tf.int64), axis=axes)
    per_unit = tf.cast(per_unit, x.dtype)
    dead = tf.reduce_mean(tf.cast(per_unit >= positions, x.dtype))
    return tf.reduce_sum(per_unit) / size, dead


def _bucket_counts(values: tf.Tensor, low: tf.Tensor, high: tf.Tensor, buckets: int) -> tf.Tensor:
    # A range of zero width (one value, or none) would divide by zero; histogram_rows puts the
    # whole count in the last bucket then, so any range does.
    value_range = tf.where(high > low, tf.stack([low, high]), tf.constant([0, 1], low.dtype))
    return tf.cast(tf.histogram_fixed_width(values, value_range, buckets), tf.float64)


def _pack(fields: list[Any], counts: tf.Tensor) -> tf.Tensor:
    """`FIELDS` values (tensors of one float dtype, or Python numbers), then the counts."""
    dtype = next(f.dtype for f in fields if isinstance(f, tf.Tensor) and f.dtype.is_floating)
    head = tf.stack([f if isinstance(f, tf.Tensor) else tf.constant(f, dtype) for f in fields])
    return tf.concat([tf.cast(head, tf.float64), counts], axis=0)


def _empty(buckets: int) -> tf.Tensor:
    return tf.constant([0, 0, np.nan, np.nan, 0, np.nan, np.nan, 1] + [0] * buckets, tf.float64)


def layer_statistics_numpy(
    x: Any,
    buckets: int = DEFAULT_BUCKETS,
    zero_tol: float = 0.0,
    unit_axis: int | None = -1,
    histogram_sample: int | None = DEFAULT_HISTOGRAM_SAMPLE,
) -> dict[str, Any]:
    """Numpy twin: `{"histogram": [k, 3] rows, "sparsity", ..., "nonfinite": float}`.

    Same definitions and, when every element is finite, the same histogram sample.
    """
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
        dead = float(is_zero.all(axis=other).mean())
    finite = x[np.isfinite(x)]
    result: dict[str, Any] = {
        "sparsity": float(is_zero.sum() / max(size, 1)),
        "dead_units": dead,
        "nonfinite": float((size - finite.size) / max(size, 1)),
        "mean": float(finite.mean(dtype=np.float64)) if finite.size else float("nan"),
        "std": float(finite.std(dtype=np.float64)) if finite.size else float("nan"),
        "histogram": np.zeros((buckets, 3)),
    }
    if finite.size:
        low, high = finite.min(), finite.max()
        values, weight = finite, 1.0
        max_abs = float(max(abs(low), abs(high)))
        fast = finite.size == size and max_abs**2 < float(np.finfo(x.dtype).max) / (4 * size)
        if fast:  # the fast path buckets a strided sample
            width, stride = sample_plan(x.shape, unit_axis, histogram_sample)
            values = x.reshape(-1, width)[::stride].reshape(-1)
            weight = size / values.size
        counts = np.full(buckets, values.size * weight / buckets)
        if high > low:
            counts = _numpy_bucket_counts(values, low, high, buckets) * weight
        result["histogram"] = histogram_rows(counts, float(low), float(high))
    return result


def _numpy_bucket_counts(values: np.ndarray, low: Any, high: Any, buckets: int) -> np.ndarray:
    """tf.histogram_fixed_width's rule, floor((max(v, low) - low) / step) clamped, applied to
    values rescaled by a power of two as the exact branch does (no bucket changes for the
    fast branch's values, which are far from overflow)."""
    max_abs = max(abs(low), abs(high))
    scale = values.dtype.type(2.0 ** np.clip(np.ceil(np.log2(max_abs)) - 1, -100, 100))
    scaled, low_s = values / scale, low / scale
    step = float(high / scale - low_s) / buckets
    offsets = (np.maximum(scaled, low_s) - low_s).astype(np.float64)
    return np.bincount(np.minimum(offsets / step, buckets - 1).astype(np.int64), minlength=buckets)
