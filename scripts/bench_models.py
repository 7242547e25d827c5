"""Models of the speed-at-scale rows of scripts/bench.py: deep MLPs, DenseNet121, a transformer.

Each builder returns the model (seeded, weights=None where Keras has weights), its probe batch
(seeded random numbers) and a one-line description.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

MLP_WIDTH = 32
MLP_BATCH = 16
DENSENET_SIZE, DENSENET_BATCH = 96, 2
TOKENS, WIDTH, HEADS, FFN_HIDDEN, BLOCKS, TRANSFORMER_BATCH = 16, 64, 4, 128, 12, 8


def random_batch(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).uniform(0.0, 1.0, shape).astype("float32")


def build_mlp(depth: int) -> tuple[keras.Model, np.ndarray, str]:
    """`depth` Dense(32, relu) layers on 32 inputs, a batch of 16."""
    keras.utils.set_random_seed(0)
    layers = [keras.layers.Dense(MLP_WIDTH, activation="relu") for _ in range(depth)]
    model = keras.Sequential([keras.Input((MLP_WIDTH,)), *layers], name=f"mlp{depth}")
    batch = random_batch((MLP_BATCH, MLP_WIDTH))
    return model, batch, f"MLP of {depth} Dense({MLP_WIDTH}, relu), batch {MLP_BATCH}"


def build_densenet121() -> tuple[keras.Model, np.ndarray, str]:
    keras.utils.set_random_seed(0)
    shape = (DENSENET_SIZE, DENSENET_SIZE, 3)
    model = keras.applications.DenseNet121(weights=None, input_shape=shape)
    batch = random_batch((DENSENET_BATCH, *shape))
    size = f"{DENSENET_SIZE}x{DENSENET_SIZE}x3"
    return model, batch, f"DenseNet121 ({size}, weights=None), batch {DENSENET_BATCH}"


class Block(keras.layers.Layer):
    """Post-norm encoder block: LayerNorm(x + MHA(x, x)), then LayerNorm(h + FFN(h))."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.attention = keras.layers.MultiHeadAttention(HEADS, WIDTH // HEADS, name="attention")
        self.norm1 = keras.layers.LayerNormalization(name="norm1")
        self.ffn_in = keras.layers.Dense(FFN_HIDDEN, activation="gelu", name="ffn_in")
        self.ffn_out = keras.layers.Dense(WIDTH, name="ffn_out")
        self.norm2 = keras.layers.LayerNormalization(name="norm2")

    def call(self, x: Any) -> Any:
        h = self.norm1(x + self.attention(x, x))
        return self.norm2(h + self.ffn_out(self.ffn_in(h)))


def build_transformer() -> tuple[keras.Model, np.ndarray, str]:
    """12 Blocks on 16 tokens of width 64, mean-pooled into a Dense(10) head; batch 8."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((TOKENS, WIDTH))
    x = inputs
    for i in range(BLOCKS):
        x = Block(name=f"block_{i}")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="head")(x), name="transformer")
    batch = random_batch((TRANSFORMER_BATCH, TOKENS, WIDTH))
    description = (
        f"transformer encoder, {BLOCKS} blocks (MHA {HEADS}x{WIDTH // HEADS}, LayerNorm, FFN "
        f"{WIDTH}-{FFN_HIDDEN}-{WIDTH}), {TOKENS} tokens x {WIDTH}, batch {TRANSFORMER_BATCH}, "
        "every sublayer probed"
    )
    return model, batch, description


BUILDERS = {
    "mlp25": lambda: build_mlp(25),
    "mlp100": lambda: build_mlp(100),
    "mlp400": lambda: build_mlp(400),
    "densenet121": build_densenet121,
    "transformer12": build_transformer,
}
