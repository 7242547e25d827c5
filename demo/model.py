"""The demo's small CNN, and its compilation, which takes the one setting its two runs differ
in: the learning rate."""

from __future__ import annotations

import keras

from demo.data import CLASSES, IMAGE_SIZE


def build_cnn(seed: int = 0) -> keras.Model:
    """A small Functional CNN: three conv blocks, global pooling, a dense head.

    Args:
        seed: weight initialization seed.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
    x = inputs
    for i, filters in enumerate((16, 32, 64), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(64, activation="relu", name="dense")(x)
    outputs = keras.layers.Dense(len(CLASSES), name="logits")(x)
    return keras.Model(inputs, outputs, name="shapes_cnn")


def compile_cnn(model: keras.Model, learning_rate: float = 1e-3) -> keras.Model:
    """Adam and sparse categorical cross-entropy on logits, with accuracy."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model
