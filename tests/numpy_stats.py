"""Numpy twin of `tbprobe.stats`: the same definitions, computed independently of TensorFlow.

Tests compare the compiled reductions with it; it uses the same histogram sample
(`tbprobe.histograms.sample_plan`) and `tf.histogram_fixed_width`'s bucketing rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tbprobe.histograms import histogram_rows, sample_plan
from tbprobe.options import DEFAULT_BUCKETS, DEFAULT_HISTOGRAM_SAMPLE


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
