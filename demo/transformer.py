"""tbprobe inside a transformer: a small ViT on the demo's shapes, every block's sublayers and
attention maps logged by one callback.

The model cuts each 32x32 image into 16 patches of 8x8, embeds them as tokens, and runs two
encoder blocks (multi-head self-attention, LayerNorm, GELU feed-forward, residuals), each a
custom Keras layer. `ProbeCallback` probes the blocks, their sublayers (down to the attention's
query/key/value projections) and the attention probabilities: `block_0/attention/attention`
shows, per head, which patch looks at which as training goes; `.../attention_entropy` how
spread out that attention is.

Usage: python -m demo.transformer [--run-dir runs/transformer] [--epochs 4] [--train-size 3000]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import keras

PATCH = 8
DIM = 32


class EncoderBlock(keras.layers.Layer):
    """Pre-norm transformer block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, heads: int = 4, **kwargs: Any):
        super().__init__(**kwargs)
        self.norm1 = keras.layers.LayerNormalization(name="norm1")
        self.attention = keras.layers.MultiHeadAttention(heads, DIM // heads, name="attention")
        self.norm2 = keras.layers.LayerNormalization(name="norm2")
        self.mlp = [
            keras.layers.Dense(2 * DIM, activation="gelu", name="mlp_in"),
            keras.layers.Dense(DIM, name="mlp_out"),
        ]

    def call(self, x: Any) -> Any:
        h = self.norm1(x)
        x = x + self.attention(h, h)
        h = self.norm2(x)
        for layer in self.mlp:
            h = layer(h)
        return x + h


def build_vit(seed: int = 0, blocks: int = 2) -> keras.Model:
    """Patches (a strided Conv2D) as tokens, `blocks` encoder blocks, mean-pool head."""
    from demo.data import CLASSES, IMAGE_SIZE

    keras.utils.set_random_seed(seed)
    tokens = (IMAGE_SIZE // PATCH) ** 2
    images = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
    x = keras.layers.Conv2D(DIM, PATCH, strides=PATCH, name="patches")(images)
    x = keras.layers.Reshape((tokens, DIM), name="tokens")(x)
    for i in range(blocks):
        x = EncoderBlock(name=f"block_{i}")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(
        keras.layers.LayerNormalization(name="norm")(x)
    )
    logits = keras.layers.Dense(len(CLASSES), name="logits")(x)
    return keras.Model(images, logits, name="vit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.transformer", description=__doc__)
    parser.add_argument("--run-dir", default="runs/transformer")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-size", type=int, default=3000)
    args = parser.parse_args(argv)

    import tbprobe
    from demo.data import make_shapes

    (x, y), (x_val, y_val) = make_shapes(args.train_size, seed=0), make_shapes(500, seed=1)
    model = build_vit()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    print(tbprobe.probe_tree(model, depth=2))
    probe = tbprobe.ProbeCallback(args.run_dir, sample=x_val[:8], max_samples=2)
    model.fit(
        x,
        y,
        batch_size=64,
        epochs=args.epochs,
        validation_data=(x_val, y_val),
        verbose=2,
        callbacks=[keras.callbacks.TensorBoard(args.run_dir), probe],
    )
    print(f"Logged to {args.run_dir}; browse with: tbprobe launch {args.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
