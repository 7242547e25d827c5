"""tbprobe in a custom training loop: one `probe.log(step)` per step.

Usage: python -m demo.custom_loop [--run-dir runs/custom_loop] [--steps 200]
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.custom_loop", description=__doc__)
    parser.add_argument("--run-dir", default="runs/custom_loop")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    import tbprobe
    from demo.data import make_shapes
    from demo.model import build_cnn

    (x, y), (x_val, _) = make_shapes(2000, seed=0), make_shapes(64, seed=1)
    model = build_cnn(seed=0)
    optimizer = keras.optimizers.Adam(1e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(2000, seed=0).batch(64).repeat()
    with tbprobe.Probe(model, args.run_dir, sample=x_val[:16], every=50) as probe:
        for images, labels in dataset.take(args.steps):
            loss = train_step(images, labels)
            if probe.log(optimizer.iterations):  # the one line
                print(f"step {int(optimizer.iterations)}: loss {float(loss):.3f}", flush=True)
    print(f"Logged to {args.run_dir}; browse with: tbprobe launch {args.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
