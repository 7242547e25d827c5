"""Shared fixtures: tiny seeded Keras models of every kind tbprobe must handle."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest


@pytest.fixture(scope="session")
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def image_batch() -> np.ndarray:
    """Four 8x8 RGB images, seeded."""
    return np.random.default_rng(1).normal(size=(4, 8, 8, 3)).astype("float32")


@pytest.fixture(scope="session")
def tiny_cnn() -> keras.Model:
    """Functional CNN: conv1 -> pool -> conv2 -> flatten -> dense -> out."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(5, activation="relu", name="dense")(x)
    outputs = keras.layers.Dense(3, name="out")(x)
    return keras.Model(inputs, outputs, name="tiny_cnn")


def chain(layers, x):
    """Apply layers one after another: an independent computation of each activation."""
    outputs = []
    for layer in layers:
        x = layer(x, training=False)
        outputs.append(np.asarray(x))
    return outputs
