"""Tiny seeded models made of custom layers with sublayers: transformer, ViT-like, ConvNeXt-like."""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable("tbprobe_tests")
class EncoderBlock(keras.layers.Layer):
    """Post-norm transformer encoder block: MHA + residual + LayerNorm, FFN + residual + LayerNorm."""

    def __init__(self, dim: int = 8, heads: int = 2, hidden: int = 16, **kwargs: Any):
        super().__init__(**kwargs)
        self.dim, self.heads, self.hidden = dim, heads, hidden
        self.attention = keras.layers.MultiHeadAttention(heads, dim // heads, name="attention")
        self.norm1 = keras.layers.LayerNormalization(name="norm1")
        self.ffn = [
            keras.layers.Dense(hidden, activation="gelu", name="ffn_in"),
            keras.layers.Dense(dim, name="ffn_out"),
        ]
        self.norm2 = keras.layers.LayerNormalization(name="norm2")

    def build(self, input_shape: Any) -> None:
        # Built here, not on first call, so that a reloaded model gets its weights back.
        self.attention.build(input_shape, input_shape)
        self.norm1.build(input_shape)
        self.ffn[0].build(input_shape)
        self.ffn[1].build((*input_shape[:-1], self.hidden))
        self.norm2.build(input_shape)

    def call(self, x: Any) -> Any:
        h = self.norm1(x + self.attention(x, x))
        f = h
        for layer in self.ffn:
            f = layer(f)
        return self.norm2(h + f)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dim": self.dim, "heads": self.heads, "hidden": self.hidden}


def encoder(blocks: int = 2, tokens: int = 5, dim: int = 8) -> keras.Model:
    """Functional model: Dense embedding, `blocks` EncoderBlocks, mean-pool head."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((tokens, dim))
    x = keras.layers.Dense(dim, name="embed")(inputs)
    for i in range(blocks):
        x = EncoderBlock(dim, name=f"block_{i}")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x), name="encoder")


def vit(image: int = 16, patch: int = 4, dim: int = 8) -> keras.Model:
    """ViT-like: Conv2D patches -> tokens -> encoder block -> class head."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((image, image, 3))
    x = keras.layers.Conv2D(dim, patch, strides=patch, name="patches")(inputs)
    x = keras.layers.Reshape(((image // patch) ** 2, dim), name="tokens")(x)
    x = EncoderBlock(dim, name="block_0")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x), name="vit")


class ConvNeXtBlock(keras.layers.Layer):
    """Depthwise 7x7 conv, LayerNorm, pointwise Dense expand (GELU) and project, residual."""

    def __init__(self, dim: int = 4, **kwargs: Any):
        super().__init__(**kwargs)
        self.depthwise = keras.layers.DepthwiseConv2D(7, padding="same", name="depthwise")
        self.norm = keras.layers.LayerNormalization(name="norm")
        self.expand = keras.layers.Dense(4 * dim, activation="gelu", name="expand")
        self.project = keras.layers.Dense(dim, name="project")

    def call(self, x: Any) -> Any:
        return x + self.project(self.expand(self.norm(self.depthwise(x))))


def convnext(size: int = 8, dim: int = 4) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(dim, 1, name="stem")(inputs)
    x = ConvNeXtBlock(dim, name="block")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(x))


class BlockStack(keras.Model):
    """Subclassed model holding a list of blocks."""

    def __init__(self, blocks: int = 2, dim: int = 8):
        super().__init__(name="stack")
        self.blocks = [EncoderBlock(dim, name=f"block_{i}") for i in range(blocks)]
        self.head = keras.layers.Dense(2, name="head")

    def call(self, x: Any) -> Any:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class SharedTwice(keras.layers.Layer):
    """Calls one sublayer twice, and holds one it never calls (a branch not taken)."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.shared = keras.layers.Dense(4, activation="tanh", name="shared")
        self.unused = keras.layers.Dense(4, name="unused")

    def build(self, input_shape: Any) -> None:
        self.shared.build(input_shape)
        self.unused.build(input_shape)

    def call(self, x: Any) -> Any:
        return self.shared(self.shared(x))
