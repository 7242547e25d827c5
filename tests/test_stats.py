"""layer_statistics against its numpy twin and against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tbprobe.stats import layer_statistics, layer_statistics_numpy

SCALARS = ("sparsity", "dead_units", "mean", "std", "nonfinite")


def compiled_statistics(x, **kwargs):
    fn = tf.function(lambda t: layer_statistics(t, **kwargs))
    return {key: value.numpy() for key, value in fn(tf.constant(x)).items()}


def assert_matches_numpy(x, **kwargs):
    got = compiled_statistics(x, **kwargs)
    want = layer_statistics_numpy(x, **kwargs)
    for name in SCALARS:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(got["histogram"][:, :2], want["histogram"][:, :2], rtol=1e-6)
    np.testing.assert_array_equal(got["histogram"][:, 2], want["histogram"][:, 2])
    return got


def test_known_relu_activations():
    # 2 samples x 3 positions x 4 units; unit 2 is zero everywhere (dead), unit 3 only once.
    x = np.abs(np.random.default_rng(0).normal(size=(2, 3, 4))).astype("float32") + 0.1
    x[..., 2] = 0.0
    x[0, 0, 3] = 0.0
    got = assert_matches_numpy(x, buckets=10)
    assert got["sparsity"] == pytest.approx(7 / 24)
    assert got["dead_units"] == pytest.approx(1 / 4)
    assert got["nonfinite"] == 0.0
    assert got["histogram"][:, 2].sum() == 24
    assert got["histogram"][0, 0] == 0.0
    assert got["histogram"][-1, 1] == pytest.approx(x.max())


def test_zero_tol_and_unit_axis():
    x = np.array([[0.05, 1.0], [-0.05, 2.0], [0.0, 3.0]], "float32")
    assert compiled_statistics(x, zero_tol=0.1)["dead_units"] == pytest.approx(0.5)
    assert compiled_statistics(x, zero_tol=0.0)["dead_units"] == 0.0
    # Units along axis 0 (as for channels-first outputs): no row is entirely zero.
    assert compiled_statistics(x, zero_tol=0.1, unit_axis=0)["dead_units"] == 0.0
    assert compiled_statistics(x, zero_tol=0.1, unit_axis=None)["dead_units"] == 0.0
    assert compiled_statistics(np.zeros((2, 2), "float32"), unit_axis=None)["dead_units"] == 1.0


def test_nonfinite_values_are_counted_and_left_out():
    x = np.array([1.0, 2.0, np.nan, np.inf, -np.inf, 3.0, 0.0, 4.0], "float32")
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
    got = {k: v.numpy() for k, v in tf.function(layer_statistics)(tensor).items()}
    want = layer_statistics_numpy(
        tf.cast(tensor, "float64" if dtype == "float64" else "float32").numpy()
    )
    for name in SCALARS:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)
    assert got["histogram"][:, 2].sum() == 35


def test_float64_values_beyond_float32_range_stay_finite():
    got = compiled_statistics(np.array([1e300, -1e300, 0.0]))
    assert got["nonfinite"] == 0.0
    assert got["histogram"][-1, 1] == 1e300


def test_random_data_matches_numpy_exactly():
    x = np.random.default_rng(2).standard_t(3, size=(16, 9, 9, 5)).astype("float32")
    got = assert_matches_numpy(x, buckets=30)
    assert got["histogram"][:, 2].sum() == x.size


@pytest.mark.slow
def test_hundred_million_elements_in_linear_memory():
    """10^8 elements: the one-hot of tf.summary.histogram would need 24 GB here."""
    n = 10**8
    fn = tf.function(lambda t: layer_statistics(t, buckets=30))
    x = tf.random.stateless_uniform([n], seed=[1, 2], minval=-1.0, maxval=1.0)
    got = fn(x)
    counts = got["histogram"][:, 2].numpy()
    assert counts.sum() == n
    # Uniform data: every bucket holds about n / 30 values.
    np.testing.assert_allclose(counts, n / 30, rtol=0.01)
    assert abs(float(got["mean"])) < 1e-3


def test_huge_finite_values_do_not_overflow():
    # A NaN through max pooling comes out as the lowest float32, -3.4e38.
    x = np.array([-3.4e38, 3.0e38, 1.0, 2.0], "float32")
    got = assert_matches_numpy(x, buckets=4)
    assert np.isfinite(got["mean"]) and np.isfinite(got["std"])
    assert got["mean"] == pytest.approx(np.mean(x.astype("float64")), rel=1e-5)
    np.testing.assert_array_equal(got["histogram"][:, 2], [1, 0, 2, 1])
