"""recording_calls: attention probabilities recorded without changing what callers get."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tbprobe
from tbprobe.recording import is_attention, recording_calls


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(5).normal(size=(2, 4, 8)).astype("float32")


def test_causal_attention_probabilities_and_mask(tokens):
    """use_causal_mask alone takes Keras's is_causal kernel; while probed, the explicit path."""
    inputs = keras.Input((4, 8))
    mha = keras.layers.MultiHeadAttention(2, 4, name="mha")
    model = keras.Model(inputs, mha(inputs, inputs, use_causal_mask=True))
    with recording_calls({"mha": mha}, attention=[mha]) as records:
        output = mha(tokens, tokens, use_causal_mask=True)
    (record,) = records
    probs, mask = record.attention
    want_output, want_probs = mha(
        tokens, tokens, use_causal_mask=True, return_attention_scores=True
    )
    np.testing.assert_allclose(probs, want_probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(output, want_output, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.broadcast_to(mask, (2, 4, 4)), np.tril(np.ones((2, 4, 4))))
    np.testing.assert_allclose(tbprobe.probe_model(model)(tokens)["mha"], model(tokens), atol=1e-6)
    assert not {"call", "_compute_attention"} & set(vars(mha))


def test_caller_asking_for_scores_still_gets_them(tokens):
    inputs = keras.Input((4, 8))
    mha = keras.layers.MultiHeadAttention(2, 4, name="mha")
    out, scores = mha(inputs, inputs, return_attention_scores=True)
    model = keras.Model(inputs, [out, scores])
    got = tbprobe.probe_model(model, layers="mha")(tokens)
    assert list(got) == ["mha/0", "mha/1", "mha/attention"]
    want_out, want_scores = model(tokens)
    np.testing.assert_allclose(got["mha/0"], want_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["mha/1"], want_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["mha/attention"], want_scores, rtol=1e-5, atol=1e-6)


def test_attention_called_twice(tokens):
    """A layer called twice records each call's own probabilities."""
    inputs = keras.Input((4, 8))
    mha = keras.layers.MultiHeadAttention(2, 4, name="mha")
    model = keras.Model(inputs, mha(mha(inputs, inputs), inputs))
    got = tbprobe.probe_model(model, layers="mha")(tokens)
    assert list(got) == ["mha/call_0", "mha/call_0/attention", "mha/call_1", "mha/call_1/attention"]
    first, p0 = mha(tokens, tokens, return_attention_scores=True)
    _, p1 = mha(first, tokens, return_attention_scores=True)
    np.testing.assert_allclose(got["mha/call_0/attention"], p0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["mha/call_1/attention"], p1, rtol=1e-5, atol=1e-6)


def test_flash_attention_is_not_recorded():
    assert is_attention(keras.layers.MultiHeadAttention(2, 4))
    assert not is_attention(keras.layers.MultiHeadAttention(2, 4, flash_attention=True))
    assert not is_attention(keras.layers.Dense(2))


def test_recording_in_a_graph_keeps_the_forward_pass(tokens):
    mha = keras.layers.MultiHeadAttention(2, 4, dropout=0.0)
    mha(tokens, tokens)

    @tf.function(autograph=False)
    def both(x):
        with recording_calls({"mha": mha}, attention=[mha]) as records:
            y = mha(x, x)
        return y, records[0].attention[0]

    y, probs = both(tokens)
    np.testing.assert_allclose(y, mha(tokens, tokens), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.numpy().sum(-1), 1.0, rtol=1e-5)
