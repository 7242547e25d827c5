"""Attention entropy and attention images against numpy twins."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from tbprobe.attention import attention_entropy, attention_maps
from tbprobe.images import SEPARATOR, feature_map_grid, grid_tiles


def entropy_twin(probs, key_mask=None):
    """Loop-by-loop numpy version of the normalized entropy: (mean, lowest head's mean)."""
    batch, heads, queries, keys = probs.shape
    mask = np.ones((batch, queries, keys), bool) if key_mask is None else key_mask
    mask = np.broadcast_to(mask, (batch, queries, keys))
    per_head = np.zeros(heads)
    for h in range(heads):
        values = []
        for b in range(batch):
            for q in range(queries):
                p = probs[b, h, q][mask[b, q]]
                n = len(p)
                if n <= 1:
                    values.append(0.0)
                    continue
                p = p[p > 0]
                values.append(-(p * np.log(p)).sum() / math.log(n))
        per_head[h] = np.mean(values)
    return per_head.mean(), per_head.min()


def softmax(logits, mask=None):
    if mask is not None:
        logits = np.where(mask, logits, -1e9)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def check_entropy(probs, key_mask=None):
    got = attention_entropy(tf.constant(probs), None if key_mask is None else tf.constant(key_mask))
    want = entropy_twin(probs, key_mask)
    np.testing.assert_allclose([float(v) for v in got], want, rtol=1e-5, atol=1e-6)
    return want


def test_uniform_is_one_and_one_hot_head_is_zero():
    probs = np.full((2, 3, 4, 5), 0.2, np.float32)
    probs[:, 1] = np.eye(5, dtype=np.float32)[[0, 3, 3, 1]]  # head 1 looks at one key
    mean, lowest = check_entropy(probs)
    assert lowest == pytest.approx(0.0, abs=1e-6)
    assert mean == pytest.approx(2 / 3, rel=1e-6)


def test_random_probabilities(rng):
    probs = softmax(rng.normal(size=(2, 4, 6, 7)) * 3).astype(np.float32)
    mean, lowest = check_entropy(probs)
    assert 0 < lowest < mean < 1


def test_masked_keys_normalize_by_the_unmasked_count(rng):
    """A padded batch: sample 1 attends 3 of 6 keys, spread evenly -> entropy 1, not log3/log6."""
    mask = np.ones((2, 4, 6), bool)
    mask[1, :, 3:] = False
    logits = rng.normal(size=(2, 2, 4, 6))
    logits[1] = 0.0
    probs = softmax(logits, mask[:, None]).astype(np.float32)
    check_entropy(probs, mask)
    per_sample = [entropy_twin(probs[b : b + 1], mask[b : b + 1])[0] for b in range(2)]
    assert per_sample[1] == pytest.approx(1.0, rel=1e-5)


def test_causal_mask_first_query_counts_as_zero():
    """The first query of a causal mask has one key: it counts as 0, and no NaN appears."""
    mask = np.tril(np.ones((4, 4), bool))[None]  # [1, queries, keys], broadcast over the batch
    probs = softmax(np.zeros((2, 2, 4, 4)), mask[:, None]).astype(np.float32)
    mean, _ = check_entropy(probs, mask)
    assert mean == pytest.approx(3 / 4, rel=1e-5)  # queries 1..3 uniform over their keys


def test_attention_image_is_a_grid_of_heads_with_absolute_values(rng):
    probs = softmax(rng.normal(size=(3, 4, 5, 6)) * 2).astype(np.float32)
    tiles = grid_tiles(attention_maps(tf.constant(probs), max_samples=2), 1024).numpy()
    image = feature_map_grid(tiles, max_side=1024)  # the host's half
    assert image.shape[0] == 2
    # 4 heads -> 2 x 2 tiles of 5 x 6, enlarged by the same integer factor, 1-pixel separators.
    grow = (image.shape[1] + 1) // 2 // 5
    assert image.shape == (2, 2 * 5 * grow + 1, 2 * 6 * grow + 1)
    for sample in range(2):
        for head in range(4):
            row, column = divmod(head, 2)
            top, left = row * (5 * grow + 1), column * (6 * grow + 1)
            tile = image[sample, top : top + 5 * grow : grow, left : left + 6 * grow : grow]
            np.testing.assert_array_equal(tile, np.round(probs[sample, head] * 254))
    assert (image[:, 5 * grow, :] == SEPARATOR).all()


def test_attention_image_caps_its_size():
    probs = np.full((1, 2, 300, 300), 1 / 300, np.float32)
    tiles = grid_tiles(attention_maps(tf.constant(probs)), max_side=128).numpy()
    image = feature_map_grid(tiles, 128)
    assert max(image.shape[1:]) <= 128
