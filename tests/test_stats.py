"""Reductions of tbprobe.stats against their numpy twin and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from numpy_stats import layer_statistics_numpy

from tbprobe.histograms import histogram_rows, sample_plan, sample_stride
from tbprobe.stats import (
    BatchedReductions,
    OutputSpec,
    layer_reductions,
    layer_reductions_exact,
    unpack_rows,
)

SCALARS = ("sparsity", "dead_units", "mean", "std", "nonfinite")


def unpack(row):
    (reduction,) = unpack_rows(row[np.newaxis])
    values = vars(reduction) | {"histogram": reduction.histogram()}
    return values


def statistics(x, **kwargs):
    """What Probe computes: the fast reductions, or the exact ones where those are not valid."""
    fast = unpack(tf.function(lambda t: layer_reductions(t, **kwargs))(tf.constant(x)).numpy())
    if fast["exact"]:
        return fast
    kwargs.pop("histogram_sample", None)
    exact = unpack(
        tf.function(lambda t: layer_reductions_exact(t, **kwargs))(tf.constant(x)).numpy()
    )
    assert exact["exact"] == 1
    return exact


def assert_matches_numpy(x, **kwargs):
    got = statistics(x, **kwargs)
    want = layer_statistics_numpy(x, **kwargs)
    for name in SCALARS:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(got["histogram"][:, :2], want["histogram"][:, :2], rtol=1e-6)
    np.testing.assert_allclose(got["histogram"][:, 2], want["histogram"][:, 2], rtol=1e-12)
    return got


def test_known_relu_activations():
    # 2 samples x 3 positions x 4 units; unit 2 is zero everywhere (dead), unit 3 only once.
    x = np.abs(np.random.default_rng(0).normal(size=(2, 3, 4))).astype("float32") + 0.1
    x[..., 2] = 0.0
    x[0, 0, 3] = 0.0
    got = assert_matches_numpy(x, buckets=10)
    assert got["exact"] == 1
    assert got["sparsity"] == pytest.approx(7 / 24)
    assert got["dead_units"] == pytest.approx(1 / 4)
    assert got["nonfinite"] == 0.0
    assert got["histogram"][:, 2].sum() == 24
    assert got["histogram"][0, 0] == 0.0
    assert got["histogram"][-1, 1] == pytest.approx(x.max())


def test_zero_tol_and_unit_axis():
    x = np.array([[0.05, 1.0], [-0.05, 2.0], [0.0, 3.0]], "float32")
    assert statistics(x, zero_tol=0.1)["dead_units"] == pytest.approx(0.5)
    assert statistics(x, zero_tol=0.1)["sparsity"] == pytest.approx(0.5)
    assert statistics(x, zero_tol=0.0)["dead_units"] == 0.0
    # Units along axis 0 (as for channels-first outputs): no row is entirely zero.
    assert statistics(x, zero_tol=0.1, unit_axis=0)["dead_units"] == 0.0
    assert statistics(x, zero_tol=0.1, unit_axis=None)["dead_units"] == 0.0
    assert statistics(np.zeros((2, 2), "float32"), unit_axis=None)["dead_units"] == 1.0


def test_nonfinite_values_are_counted_and_left_out():
    x = np.array([1.0, 2.0, np.nan, np.inf, -np.inf, 3.0, 0.0, 4.0], "float32")
    fast = unpack(tf.function(layer_reductions)(tf.constant(x)).numpy())
    assert fast["exact"] == 0  # the fast reductions say they do not hold
    got = assert_matches_numpy(x, buckets=4)
    assert got["nonfinite"] == pytest.approx(3 / 8)
    assert got["mean"] == pytest.approx(2.0)
    assert got["std"] == pytest.approx(np.std([1, 2, 3, 0, 4]))
    np.testing.assert_array_equal(got["histogram"][:, 2], [1, 1, 1, 2])
    np.testing.assert_allclose(got["histogram"][:, 0], [0, 1, 2, 3])


def test_all_nan_gives_empty_histogram_and_nan_moments():
    got = assert_matches_numpy(np.full((3, 2), np.nan, "float32"), buckets=5)
    assert got["nonfinite"] == 1.0
    assert np.isnan(got["mean"]) and np.isnan(got["std"])
    np.testing.assert_array_equal(got["histogram"], np.zeros((5, 3)))


def test_all_equal_values_follow_tensorboard():
    got = assert_matches_numpy(np.full((4, 3), 2.5, "float32"), buckets=6)
    np.testing.assert_array_equal(got["histogram"][:, :2], np.full((6, 2), 2.5))
    np.testing.assert_array_equal(got["histogram"][:, 2], [0, 0, 0, 0, 0, 12])
    assert got["std"] == 0.0


def test_empty_tensor():
    got = assert_matches_numpy(np.zeros((0, 4), "float32"), buckets=3)
    assert got["sparsity"] == 0.0 and got["nonfinite"] == 0.0 and got["dead_units"] == 0.0
    np.testing.assert_array_equal(got["histogram"], np.zeros((3, 3)))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_dtypes(dtype):
    x = np.random.default_rng(1).normal(size=(5, 7)).astype("float32")
    x[x < 0] = 0
    tensor = tf.cast(tf.constant(x), dtype)
    got = unpack(tf.function(layer_reductions)(tensor).numpy())
    assert got["exact"] == 1
    want = layer_statistics_numpy(
        tf.cast(tensor, "float64" if dtype == "float64" else "float32").numpy()
    )
    for name in SCALARS:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)
    assert got["histogram"][:, 2].sum() == 35


def test_float64_values_beyond_float32_range_stay_finite():
    got = statistics(np.array([1e300, -1e300, 0.0]))
    assert got["nonfinite"] == 0.0
    assert got["histogram"][-1, 1] == 1e300


def test_random_data_matches_numpy_exactly():
    x = np.random.default_rng(2).standard_t(3, size=(16, 9, 9, 5)).astype("float32")
    got = assert_matches_numpy(x, buckets=30)
    assert got["histogram"][:, 2].sum() == x.size


def test_one_pass_std_is_bounded_for_offset_data():
    x = (1000.0 + np.random.default_rng(5).normal(size=(64, 64))).astype("float32")
    # One-pass float32 std: within 1e-3 * |mean| (documented), here 1.0 around a std of 1.
    got = statistics(x)
    assert abs(got["std"] - x.astype("float64").std()) < 1e-3 * 1000
    assert got["mean"] == pytest.approx(x.astype("float64").mean(), rel=1e-6)


def test_huge_finite_values_do_not_overflow():
    # A NaN through max pooling comes out as the lowest float32, -3.4e38.
    x = np.array([-3.4e38, 3.0e38, 1.0, 2.0], "float32")
    got = assert_matches_numpy(x, buckets=4)
    assert np.isfinite(got["mean"]) and np.isfinite(got["std"])
    assert got["mean"] == pytest.approx(np.mean(x.astype("float64")), rel=1e-5)
    np.testing.assert_array_equal(got["histogram"][:, 2], [1, 0, 2, 1])


def test_sample_stride_is_coprime_to_every_dimension():
    assert sample_stride((4, 8), cap=100) == 1
    assert sample_stride((4, 8), cap=None) == 1
    # 8 * 48 * 48 = 18432 elements, cap 1000 -> at least 19; 19 shares no factor with 8 or 48.
    assert sample_stride((8, 48, 48), cap=1000) == 19
    # 2 * 3 * 5 * 7 = 210 elements, cap 50 -> 5 shares a factor with 5, 6 with 2 and 3 -> 11.
    assert sample_stride((2, 3, 5, 7), cap=50) == 11


def test_sample_plan_takes_whole_positions_when_units_are_last():
    # 6 x 10 x 10 positions of 16 channels, cap 1000 -> at most 62 positions: stride 11 of 600.
    assert sample_plan((6, 10, 10, 16), -1, 1000) == (16, sample_stride((6, 10, 10), 62))
    assert sample_stride((6, 10, 10), 62) == 11
    # Units elsewhere (channels first, or none): single elements.
    assert sample_plan((6, 16, 10, 10), 1, 1000) == (1, sample_stride((6, 16, 10, 10), 1000))
    assert sample_plan((6, 16), None, 10) == (1, 11)
    assert sample_plan((6, 16), -1, None) == (16, 1)


def test_sampled_histogram_is_scaled_to_the_element_count():
    x = np.random.default_rng(3).normal(size=(6, 10, 10, 16)).astype("float32")
    got = assert_matches_numpy(x, buckets=20, histogram_sample=1000)
    assert got["histogram"][:, 2].sum() == pytest.approx(x.size)
    # The sample follows the distribution: each big bucket near its exact count.
    exact = statistics(x, buckets=20, histogram_sample=None)["histogram"]
    full = layer_statistics_numpy(x, 20, histogram_sample=None)["histogram"]
    np.testing.assert_array_equal(exact[:, 2], full[:, 2])
    np.testing.assert_array_equal(exact[:, :2], got["histogram"][:, :2])
    big = exact[:, 2] > 500
    np.testing.assert_allclose(got["histogram"][big, 2], exact[big, 2], rtol=0.25)
    # Scalars never use the sample.
    assert got["sparsity"] == 0.0 and got["mean"] == pytest.approx(x.mean(), abs=1e-6)


def test_histogram_rows_edge_cases():
    np.testing.assert_array_equal(histogram_rows([0, 0], np.nan, np.nan), np.zeros((2, 3)))
    np.testing.assert_array_equal(histogram_rows([0, 5], 3.0, 3.0), [[3, 3, 0], [3, 3, 5]])
    rows = histogram_rows([1, 2, 3], 0.0, 0.3)
    np.testing.assert_allclose(rows[:, 0], [0, 0.1, 0.2])
    assert rows[-1, 1] == 0.3


@pytest.mark.slow
def test_hundred_million_elements_in_linear_memory():
    """10^8 elements: the one-hot of tf.summary.histogram would need 24 GB here."""
    n = 10**8
    x = tf.random.stateless_uniform([n], seed=[1, 2], minval=-1.0, maxval=1.0)
    # Uniform data: every bucket holds about n / 30 values; a sample of m values deviates by
    # about sqrt(m / 30) per bucket, so allow 5 of those standard deviations.
    for sample, rtol in ((None, 0.01), (2**16, 5 / np.sqrt(2**16 / 30))):
        fn = tf.function(lambda t, s=sample: layer_reductions(t, histogram_sample=s))
        counts = unpack(fn(x).numpy())["histogram"][:, 2]
        assert counts.sum() == pytest.approx(n)
        np.testing.assert_allclose(counts, n / 30, rtol=rtol)
        assert abs(unpack(fn(x).numpy())["mean"]) < 1e-3
    exact = unpack(tf.function(layer_reductions_exact)(x).numpy())
    assert exact["histogram"][:, 2].sum() == n


def test_outputs_reduced_together_match_each_reduced_alone():
    """One BatchedReductions over outputs of every kind: float32 and float64, empty, rank 1,
    channels-first, saturating, one whose sample is too large to batch, one with a NaN. Each row
    equals numpy's answer for that output alone, and no output leaks into another's row."""
    rng = np.random.default_rng(7)
    relu = np.maximum(rng.normal(size=(4, 6, 6, 5)), 0).astype("float32")
    relu[..., 1] = 0.0  # a dead unit
    tensors = [
        (relu, OutputSpec(-1), {}),
        (rng.normal(size=(3, 7)), OutputSpec(-1), {}),  # float64
        (np.zeros((0, 4), "float32"), OutputSpec(-1), {}),
        (rng.normal(size=(11,)).astype("float32"), OutputSpec(-1), {}),
        (rng.normal(size=(2, 3, 4, 4)).astype("float32"), OutputSpec(1), {"unit_axis": 1}),
        (
            1 / (1 + np.exp(-4 * rng.normal(size=(5, 9)))).astype("float32"),
            OutputSpec(-1, (0.0, 1.0)),
            {},
        ),
        (rng.normal(size=(3, 200, 300)).astype("float32"), OutputSpec(-1), {}),
    ]
    batch_size = 2**16
    with_nan = rng.normal(size=(4, 4)).astype("float32")
    with_nan[1, 2] = np.nan
    tensors.append((with_nan, OutputSpec(-1), {}))

    @tf.function
    def reduce_all(*xs):
        batch = BatchedReductions([spec for _, spec, _ in tensors], 12, 0.0, batch_size)
        for i, x in enumerate(xs):
            batch.reduce(i, x)
        return batch.finish()

    rows = unpack_rows(reduce_all(*[tf.constant(x) for x, _, _ in tensors]).numpy())
    for (x, _, kwargs), row in zip(tensors[:-1], rows[:-1], strict=True):
        want = layer_statistics_numpy(x, buckets=12, histogram_sample=batch_size, **kwargs)
        assert row.exact
        for name in SCALARS:
            np.testing.assert_allclose(getattr(row, name), want[name], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(row.histogram()[:, 2], want["histogram"][:, 2], rtol=1e-12)
    sigmoid = tensors[5][0]
    near = (sigmoid <= 1e-3) | (sigmoid >= 1 - 1e-3)
    assert rows[5].saturated == pytest.approx(near.mean())
    assert np.isnan(rows[0].saturated)  # not a saturating output
    assert not rows[-1].exact  # the NaN output's fast row is flagged for the exact branch
    assert rows[0].dead_units == pytest.approx(1 / 5)
