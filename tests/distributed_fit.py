"""Train a tiny model with tbprobe under a tf.distribute strategy, in a fresh process.

Run by tests/test_distribute.py: logical devices must be configured before TensorFlow starts,
and each worker of a MultiWorkerMirroredStrategy is its own process (TF_CONFIG set by the
caller). `--loop fit` uses ProbeCallback; `--loop custom` a strategy.run loop with Probe.log
(Keras 3.15's fit fails under MultiWorkerMirroredStrategy before training starts, with or
without tbprobe: its symbolic build calls strategy.reduce on the first batch). Prints one JSON
line with what the test checks.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", choices=["mirrored", "multi_worker"], required=True)
    parser.add_argument("--loop", choices=["fit", "custom"], required=True)
    parser.add_argument("--log-dir", required=True)
    args = parser.parse_args()

    if args.strategy == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()

    import keras

    import tbprobe

    keras.utils.set_random_seed(0)
    with strategy.scope():
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
        model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 3)).astype("float32")
    y = rng.normal(size=(64, 2)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)

    logged = []
    if args.loop == "fit":
        callback = tbprobe.ProbeCallback(args.log_dir, sample=x[:4])
        model.fit(dataset, epochs=2, verbose=0, callbacks=[callback])
    else:
        probe = tbprobe.Probe(model, args.log_dir, sample=x[:4], every=4)
        optimizer = model.optimizer

        def step_fn(xb, yb):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(xb, training=True) - yb))
                loss = loss / strategy.num_replicas_in_sync
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))

        @tf.function
        def train_step(batch):
            strategy.run(step_fn, args=batch)

        for _ in range(2):
            for batch in strategy.experimental_distribute_dataset(dataset):
                train_step(batch)
                logged.append(probe.log(optimizer.iterations))
        probe.close()
    print(
        json.dumps(
            {
                "replicas": strategy.num_replicas_in_sync,
                "writes": strategy.extended.should_save_summary,
                "logged": logged,
                # Computed apart from tbprobe, for the logged value to be checked against.
                "conv_mean": float(np.mean(model.get_layer("conv")(x[:4]))),
                "step": int(model.optimizer.iterations.numpy()),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
