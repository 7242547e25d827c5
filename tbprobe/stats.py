"""Reductions of activation tensors: histogram buckets and health scalars, many outputs at once.

For a float tensor `x`, tbprobe reports:

* a histogram of the finite values (`tbprobe.histograms`: its buckets, its sample, TensorBoard's
  rows);
* `sparsity`: fraction of elements with `abs(x) <= zero_tol` (0 for an empty tensor);
* `dead_units`: fraction of units (positions along `unit_axis`) with `abs(x) <= zero_tol` at every
  sample and position; the whole tensor is one unit when `unit_axis` is None; 0 when empty;
* `mean`, `std`: over the finite elements (population std); NaN when there is none;
* `nonfinite`: fraction of elements that are NaN or +-Inf (0 for an empty tensor);
* `saturated`, for outputs bounded by an activation (sigmoid, tanh, softmax): fraction of
  elements within `SATURATION_TOL` of a bound; NaN for other outputs.

`BatchedReductions` computes them for every probed output of a model in one compiled step. Each
output, as its layer returns, is reduced to a few small tensors with few ops: min, max, sum and
sum of squares; per-unit zero counts (a matrix product with a ones row, as fast as one full
reduction, where a column reduction costs twice as much); and its histogram sample. Everything
else (moments, exactness, dead units, bucketing, packing) runs once for all outputs at the end,
on stacked vectors: the graph grows by few ops per output, and executing many tiny ops, which
dominates small models, stays rare. `std` comes from one pass,
`sqrt(E[x^2] - E[x]^2)`, accurate to about `1e-3 * |mean|` when `std` is tiny next to `|mean|`.

Each output's histogram sample is bucketed with every other's at the end (`tbprobe.histograms`).

These results hold only when every element is finite and the sum of squares cannot overflow;
the `exact` field says so. Otherwise `layer_reductions_exact(x)` gives them: it masks the finite
values, rescales them by a power of two and buckets all of them.

Both produce rows laid out as `FIELDS` followed by the bucket counts, so that a whole model's
results leave the device as one matrix; `unpack_rows` names them again on the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tbprobe.histograms import (
    batched_counts,
    fixed_width_counts,
    histogram_rows,
    sample_plan,
    unit_index,
)
from tbprobe.options import DEFAULT_BUCKETS, DEFAULT_HISTOGRAM_SAMPLE
from tbprobe.tags import SATURATED, SCALAR_NAMES

FIELDS = (*SCALAR_NAMES, SATURATED, "low", "high", "exact")
"""The named layout of a reduction row; bucket counts follow."""
SATURATION_TOL = 1e-3
# Samples up to this many elements are bucketed together (one op for all, a dozen passes over
# their elements); larger ones each with one `tf.histogram_fixed_width` (a few ops, one pass).
BATCHED_SAMPLE_LIMIT = 2**12
_FAST_SUMS_LIMIT = 2**24  # float32 sums of 0/1 are exact below this


@dataclass(frozen=True)
class OutputReduction:
    """One output's reductions on the host, by name (a row of `unpack_rows`)."""

    sparsity: float
    dead_units: float
    mean: float
    std: float
    nonfinite: float
    saturated: float
    low: float
    high: float
    exact: bool
    counts: np.ndarray

    def scalars(self) -> dict[str, float]:
        """`{name: value}` for each of `SCALAR_NAMES`."""
        return {name: float(getattr(self, name)) for name in SCALAR_NAMES}

    def histogram(self) -> np.ndarray:
        """TensorBoard's `[buckets, 3]` rows."""
        return histogram_rows(self.counts, self.low, self.high)


def unpack_rows(matrix: np.ndarray) -> list[OutputReduction]:
    """Name the rows of a `[outputs, len(FIELDS) + buckets]` reduction matrix."""
    matrix = np.asarray(matrix, np.float64)
    head = len(FIELDS)
    exact = FIELDS.index("exact")
    return [
        OutputReduction(
            **dict(zip(FIELDS, values, strict=True)) | {"exact": values[exact] == 1}, counts=counts
        )
        for values, counts in zip(matrix[:, :head].tolist(), matrix[:, head:], strict=True)
    ]


@dataclass(frozen=True)
class OutputSpec:
    """What `BatchedReductions` needs to know of one output before the graph runs (its shape
    is the traced tensor's).

    Attributes:
        unit_axis: axis indexing units for `dead_units`; None: the whole tensor is one unit.
        bounds: `(low, high)` of a saturating activation, or None (no `saturated` value).
    """

    unit_axis: int | None = -1
    bounds: tuple[float, float] | None = None


class BatchedReductions:
    """The fast reductions of many outputs, traced inside one `tf.function`.

    Call `reduce(index, x)` for each output as it is computed (it returns the small tensors that
    hold what is needed of `x`, so the caller may make later work wait for them and free `x`),
    then `finish()` once for the `[outputs, len(FIELDS) + buckets]` float64 matrix, whose rows
    are valid where their `exact` field is 1.

    Args:
        specs: one `OutputSpec` per output, in row order.
        buckets: histogram buckets, >= 1.
        zero_tol: an element counts as zero when `abs(x) <= zero_tol`.
        histogram_sample: most elements bucketed per output; None: all of them.
    """

    def __init__(
        self,
        specs: list[OutputSpec],
        buckets: int = DEFAULT_BUCKETS,
        zero_tol: float = 0.0,
        histogram_sample: int | None = DEFAULT_HISTOGRAM_SAMPLE,
    ):
        self.specs = list(specs)
        self._shapes: dict[int, tuple[int, ...]] = {}  # index -> shape of the traced tensor
        self.buckets = buckets
        self.zero_tol = zero_tol
        self.histogram_sample = histogram_sample
        self._moments: dict[int, tf.Tensor] = {}  # index -> [min, max, sum, sum(x^2)/2]
        self._zeros: list[tuple[int, tf.Tensor]] = []  # (index, [1, units] zero counts)
        self._zero_totals: dict[int, tf.Tensor] = {}  # outputs of one element per unit
        self._samples: list[tuple[int, tf.Tensor]] = []  # float32 samples bucketed together
        self._sampled: dict[int, int] = {}  # index -> elements in its histogram sample
        self._counts: dict[int, tf.Tensor] = {}  # buckets of samples too large to batch
        self._saturated: dict[int, tf.Tensor] = {}
        self._constants: dict[Any, tf.Tensor] = {}

    def reduce(self, index: int, x: tf.Tensor) -> list[tf.Tensor]:
        """Reduce output `index`; returns the tensors that keep what is needed of `x`."""
        spec = self.specs[index]
        shape = self._shapes[index] = _static_shape(x)
        x = _as_float(x)
        size = math.prod(shape)
        if size == 0:
            return []
        unit = unit_index(len(shape), spec.unit_axis)
        units = 1 if unit is None else shape[unit]
        positions = size // units
        rows = None  # x as [positions, units], when units are last
        if unit in (None, len(shape) - 1):
            rows = tf.reshape(x, self._constant(("shape", positions, units), [positions, units]))
        whole = x if rows is None else rows
        axes = self._constant(("axes", whole.shape.rank), list(range(whole.shape.rank)))
        low, high = tf.reduce_min(whole, axes), tf.reduce_max(whole, axes)
        moments = tf.stack([low, high, tf.reduce_sum(whole, axes), tf.nn.l2_loss(whole)])
        self._moments[index] = moments
        made = [moments, self._reduce_zeros(index, x, rows, unit, positions, units)]
        made.append(self._reduce_sample(index, x, rows, low, high))
        if spec.bounds is not None:
            lower, upper = spec.bounds
            near = tf.logical_or(whole <= lower + SATURATION_TOL, whole >= upper - SATURATION_TOL)
            self._saturated[index] = tf.reduce_sum(tf.cast(near, tf.float32), axes) / size
            made.append(self._saturated[index])
        return made

    def finish(self) -> tf.Tensor:
        """The `[outputs, len(FIELDS) + buckets]` float64 matrix of every output's row."""
        count = len(self.specs)
        empty = [i for i in range(count) if math.prod(self._shapes[i]) == 0]
        live = [i for i in range(count) if i not in empty]
        if not live:
            return tf.constant([_empty_row(self.buckets)] * count, tf.float64)
        sizes = np.array([math.prod(self._shapes[i]) for i in live], np.float64)
        low, high, total, half_squares = tf.unstack(self._in_rows(live, self._moments), axis=1)
        mean = total / sizes
        std = tf.sqrt(tf.maximum(2 * half_squares / sizes - mean * mean, 0))
        # Valid when the sum is finite (no NaN or Inf) and squares cannot overflow.
        limits = np.array(
            [
                np.finfo(self._moments[i].dtype.as_numpy_dtype).max / (4 * sizes[k])
                for k, i in enumerate(live)
            ]
        )
        max_abs = tf.maximum(tf.abs(low), tf.abs(high))
        exact = tf.cast(
            tf.logical_and(tf.math.is_finite(total), max_abs * max_abs < limits), tf.float64
        )
        sparsity, dead = self._zero_fractions(live, sizes)
        saturated = self._in_rows(live, self._saturated, np.nan)
        fields = {
            "sparsity": sparsity,
            "dead_units": dead,
            "mean": mean,
            "std": std,
            "nonfinite": tf.zeros_like(mean),
            SATURATED: saturated,
            "low": low,
            "high": high,
            "exact": exact,
        }
        head = tf.stack([fields[name] for name in FIELDS], axis=1)
        rows = tf.concat([head, self._bucket_counts(live)], axis=1)
        if not empty:
            return rows
        blanks = tf.constant([_empty_row(self.buckets)] * len(empty), tf.float64)
        order = np.argsort(live + empty)
        return tf.gather(tf.concat([rows, blanks], axis=0), order)

    def _constant(self, key: Any, value: Any, dtype: Any = tf.int32) -> tf.Tensor:
        """A constant made once per graph: shared shapes, axes and ones rows cut the op count."""
        if key not in self._constants:
            self._constants[key] = tf.constant(value, dtype)
        return self._constants[key]

    def _reduce_zeros(
        self,
        index: int,
        x: tf.Tensor,
        rows: tf.Tensor | None,
        unit: int | None,
        positions: int,
        units: int,
    ) -> tf.Tensor:
        source = x if rows is None else rows
        if self.zero_tol == 0:
            is_zero = tf.equal(source, self._constant(("zero", source.dtype), 0, source.dtype))
        else:
            is_zero = tf.abs(source) <= self.zero_tol
        if positions == 1:  # every unit a single element: dead units are the zeros themselves
            dtype = tf.float32 if units < _FAST_SUMS_LIMIT else tf.float64
            total = tf.reduce_sum(tf.cast(is_zero, dtype))
            self._zero_totals[index] = total
            return total
        if rows is not None and positions < _FAST_SUMS_LIMIT:
            ones = self._constant(("ones", positions), np.ones((1, positions)), tf.float32)
            per_unit = tf.matmul(ones, tf.cast(is_zero, tf.float32))
        else:  # column sums of a huge or channels-first tensor, in float64 to stay exact
            axes = [0] if rows is not None else [a for a in range(x.shape.rank) if a != unit]
            per_unit = tf.reshape(tf.reduce_sum(tf.cast(is_zero, tf.float64), axes), [1, units])
        self._zeros.append((index, per_unit))
        return per_unit

    def _reduce_sample(
        self, index: int, x: tf.Tensor, rows: tf.Tensor | None, low: tf.Tensor, high: tf.Tensor
    ) -> tf.Tensor:
        spec = self.specs[index]
        width, stride = sample_plan(self._shapes[index], spec.unit_axis, self.histogram_sample)
        flat = self._constant("flat", [-1])
        if stride == 1:
            sample = tf.reshape(x, flat)
        else:
            by_width = (
                rows if rows is not None and width == rows.shape[1] else tf.reshape(x, [-1, width])
            )
            sample = tf.reshape(by_width[::stride], flat)
        self._sampled[index] = int(sample.shape[0])
        if x.dtype == tf.float32 and int(sample.shape[0]) <= BATCHED_SAMPLE_LIMIT:
            self._samples.append((index, sample))
            return sample
        self._counts[index] = fixed_width_counts(sample, low, high, self.buckets)
        return self._counts[index]

    def _zero_fractions(self, live: list[int], sizes: np.ndarray) -> tuple[tf.Tensor, tf.Tensor]:
        """Sparsity and dead-unit fraction per live output, from all per-unit zero counts."""
        slot = {i: k for k, i in enumerate(live)}
        zeros = self._in_rows(live, self._zero_totals)
        dead = zeros / sizes  # right where a unit is one element; the others are added below
        for dtype in (tf.float32, tf.float64):
            parts = [(i, t) for i, t in self._zeros if t.dtype == dtype]
            if not parts:
                continue
            counts = tf.cast(tf.concat([t for _, t in parts], axis=1)[0], tf.float64)
            units = [int(t.shape[1]) for _, t in parts]
            # Which part each unit count belongs to, made at run time: a constant would be as
            # long as all the units together.
            part = tf.repeat(tf.range(len(parts)), units)
            slots = tf.gather([slot[i] for i, _ in parts], part)
            positions = [
                math.prod(self._shapes[i]) // u for (i, _), u in zip(parts, units, strict=True)
            ]
            is_dead = tf.cast(
                counts >= tf.gather(np.array(positions, np.float64), part), tf.float64
            )
            zeros += tf.math.unsorted_segment_sum(counts, slots, len(live))
            fraction = np.zeros(len(live))
            for (i, _), u in zip(parts, units, strict=True):
                fraction[slot[i]] = 1.0 / u
            dead += tf.math.unsorted_segment_sum(is_dead, slots, len(live)) * fraction
        return zeros / sizes, dead

    def _bucket_counts(self, live: list[int]) -> tf.Tensor:
        """`[live, buckets]` float64 counts scaled to each output's element count."""
        counts = dict(self._counts)
        if self._samples:
            indices = [i for i, _ in self._samples]
            lengths = [int(s.shape[0]) for _, s in self._samples]
            values = tf.concat([s for _, s in self._samples], axis=0)
            moments = tf.stack([self._moments[i] for i in indices])
            batched = batched_counts(values, lengths, moments[:, 0], moments[:, 1], self.buckets)
            counts.update(zip(indices, tf.unstack(batched), strict=True))
        scale = np.array([math.prod(self._shapes[i]) / self._sampled[i] for i in live])
        return self._in_rows(live, counts) * scale[:, None]

    def _in_rows(
        self, live: list[int], values: dict[int, tf.Tensor], fill: float = 0.0
    ) -> tf.Tensor:
        """Stack per-output tensors in `live` order, as float64; outputs without one get `fill`.

        Tensors of one dtype are stacked, then cast, together: one cast per dtype, not per output.
        """
        groups: dict[Any, list[int]] = {}
        for i in live:
            if i in values:
                groups.setdefault(values[i].dtype, []).append(i)
        if not groups:
            return tf.fill([len(live)], tf.constant(fill, tf.float64))
        parts = [tf.cast(tf.stack([values[i] for i in g]), tf.float64) for g in groups.values()]
        order = [i for g in groups.values() for i in g]
        if len(order) < len(live):
            missing = [i for i in live if i not in values]
            parts.append(
                tf.fill([len(missing), *parts[0].shape[1:]], tf.constant(fill, tf.float64))
            )
            order += missing
        return _in_order(parts, order, live)


def _in_order(parts: list[tf.Tensor], order: list[int], live: list[int]) -> tf.Tensor:
    """Concatenate `parts`, whose rows belong to outputs `order`, into `live` order."""
    joined = parts[0] if len(parts) == 1 else tf.concat(parts, axis=0)
    if order == live:
        return joined
    position = {i: k for k, i in enumerate(order)}
    return tf.gather(joined, [position[i] for i in live])


def layer_reductions(
    x: tf.Tensor,
    buckets: int = DEFAULT_BUCKETS,
    zero_tol: float = 0.0,
    unit_axis: int | None = -1,
    histogram_sample: int | None = DEFAULT_HISTOGRAM_SAMPLE,
    bounds: tuple[float, float] | None = None,
) -> tf.Tensor:
    """Fast reductions of one activation (`BatchedReductions` of a single output).

    Args:
        x: float tensor with a static shape (float16/bfloat16 are computed in float32).
        buckets: number of histogram buckets, >= 1.
        zero_tol: an element counts as zero when `abs(x) <= zero_tol`.
        unit_axis: axis indexing units (channels) for `dead_units`; None: one unit.
        histogram_sample: most elements bucketed; None: all of them.
        bounds: `(low, high)` of a saturating activation, for `saturated`.

    Returns:
        float64 vector `[len(FIELDS) + buckets]`, valid where its `exact` field is 1.
    """
    x = tf.convert_to_tensor(x)
    batch = BatchedReductions([OutputSpec(unit_axis, bounds)], buckets, zero_tol, histogram_sample)
    batch.reduce(0, x)
    return batch.finish()[0]


def layer_reductions_exact(
    x: tf.Tensor,
    buckets: int = DEFAULT_BUCKETS,
    zero_tol: float = 0.0,
    unit_axis: int | None = -1,
) -> tf.Tensor:
    """Reductions of one activation that may hold NaN, Inf or huge values; every element
    bucketed. Same layout as `layer_reductions` (`saturated` is left to it), `exact` always 1."""
    shape = _static_shape(x)
    x = _as_float(x)
    size = math.prod(shape)
    if size == 0:
        return tf.constant(_empty_row(buckets), tf.float64)
    unit = unit_index(len(shape), unit_axis)
    axes = [a for a in range(len(shape)) if a != unit]
    is_zero = tf.equal(x, 0) if zero_tol == 0 else tf.abs(x) <= zero_tol
    per_unit = tf.reduce_sum(tf.cast(is_zero, tf.float64), axis=axes)
    positions = size // (1 if unit is None else shape[unit])
    sparsity = tf.reduce_sum(per_unit) / size
    dead_units = tf.reduce_mean(tf.cast(per_unit >= positions, tf.float64))
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
    counts = tf.cast(fixed_width_counts(scaled, low / scale, high / scale, buckets), tf.float64)
    fields = {
        "sparsity": sparsity,
        "dead_units": dead_units,
        "mean": mean * scale,
        "std": std,
        "nonfinite": tf.cast(size - count, x.dtype) / size,
        SATURATED: np.nan,
        "low": low,
        "high": high,
        "exact": 1.0,
    }
    head = [tf.cast(fields[name], tf.float64) for name in FIELDS]
    return tf.concat([tf.stack(head), counts], axis=0)


def _empty_row(buckets: int) -> list[float]:
    values = {"sparsity": 0, "dead_units": 0, "nonfinite": 0, "exact": 1}
    return [float(values.get(name, np.nan)) for name in FIELDS] + [0.0] * buckets


def _static_shape(x: Any) -> tuple[int, ...]:
    shape = tf.convert_to_tensor(x).shape
    if not shape.is_fully_defined():
        raise ValueError(f"tbprobe's reductions need a static shape. Received: {shape}.")
    return tuple(int(d) for d in shape)


def _as_float(x: Any) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    return tf.cast(x, tf.float64 if x.dtype == tf.float64 else tf.float32)
