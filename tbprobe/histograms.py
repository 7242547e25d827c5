"""Histograms of activations: the sample that is bucketed, the buckets, TensorBoard's rows.

A histogram has `buckets` equal-width buckets spanning the finite values from their exact min
to their exact max, the last bucket closed on both sides, counts summing to the number of
finite elements; TensorBoard stores it as `[buckets, 3]` rows `(left_edge, right_edge, count)`
(`histogram_rows`), with TensorBoard's edge cases (no finite value: all zeros; one distinct
value: every edge equal to it, the whole count in the last bucket).

Buckets are counted on a sample of about `histogram_sample` elements (`sample_plan`): whole
positions (every channel) taken at a fixed stride coprime to every other dimension, so that
rows, columns and samples are covered evenly; counts are scaled to the number of elements.
Bucketing costs several times a reduction per element, so bucketing every element of every
layer would cost more than the forward pass itself. The samples of many outputs are bucketed
together (`batched_counts`), with `tf.histogram_fixed_width`'s arithmetic; a sample too large
to batch is bucketed on its own, in place (`fixed_width_counts`), so memory stays linear in its
size. (`tf.summary.histogram` builds an `n x buckets` float64 one-hot instead.)
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf


def sample_plan(shape: tuple[int, ...], unit_axis: int | None, cap: int | None) -> tuple[int, int]:
    """How the histogram sample is taken: `(width, stride)`.

    The tensor is viewed as rows of `width` contiguous elements (a whole position, every unit,
    when units are the last axis; single elements otherwise) and every `stride`-th row is kept,
    at most about `cap` elements in all: contiguous reads, every channel in every kept row.
    """
    rank = len(shape)
    if rank >= 2 and unit_index(rank, unit_axis) == rank - 1:
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


def batched_counts(
    values: tf.Tensor, lengths: list[int], low: tf.Tensor, high: tf.Tensor, buckets: int
) -> tf.Tensor:
    """`[len(lengths), buckets]` int32 counts of concatenated float32 samples, each in its own
    range.

    The arithmetic of `tf.histogram_fixed_width`, element by element: the offset from the low
    edge in float32, divided in float64 by the bucket width, clamped to the last bucket. Values
    of a non-finite output (whose row is not exact, so discarded) are replaced first, since a
    NaN has no bucket.
    """
    outputs = len(lengths)
    segment = tf.repeat(tf.range(outputs), lengths)
    low_each = tf.gather(low, segment)
    values = tf.where(tf.math.is_finite(values), values, low_each)
    width = tf.cast(high - low, tf.float64) / buckets
    width = tf.where(width > 0, width, tf.ones_like(width))
    offset = tf.cast(tf.maximum(values, low_each) - low_each, tf.float64)
    bucket = tf.cast(tf.minimum(offset / tf.gather(width, segment), buckets - 1), tf.int32)
    # NaN bounds (an output with NaN) give undefined buckets: keep them inside the output's row.
    flat = tf.clip_by_value(bucket, 0, buckets - 1) + segment * buckets
    counts = tf.math.bincount(flat, minlength=outputs * buckets, maxlength=outputs * buckets)
    return tf.reshape(counts, [outputs, buckets])


def fixed_width_counts(
    values: tf.Tensor, low: tf.Tensor, high: tf.Tensor, buckets: int
) -> tf.Tensor:
    """int32 counts of one sample with `tf.histogram_fixed_width`, which needs no temporaries."""
    # histogram_fixed_width has no bucket for NaN; those rows are not exact anyway.
    values = tf.where(tf.math.is_finite(values), values, tf.constant(0, values.dtype))
    # A range of zero width (one value, or none) would divide by zero; histogram_rows puts the
    # whole count in the last bucket then, so any range does.
    value_range = tf.where(high > low, tf.stack([low, high]), tf.constant([0, 1], low.dtype))
    return tf.histogram_fixed_width(values, value_range, buckets)


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


def unit_index(rank: int, unit_axis: int | None) -> int | None:
    return None if unit_axis is None or rank == 0 else unit_axis % rank
