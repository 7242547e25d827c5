"""Log gradients of one model under MirroredStrategy on two logical CPUs and of its copy on
one device, in a fresh process (logical devices must be set before TensorFlow starts).

Run by tests/test_gradients.py with a folder: writes `<folder>/mirrored` and `<folder>/single`,
each a `fit` of one epoch (2 steps) with `ProbeCallback(targets=...)`, and `<folder>/scoped`, a
`Probe` of the mirrored model logged once inside the strategy's scope before training; prints
one JSON line.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf


def main() -> None:
    folder = sys.argv[1]
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    import keras

    import tbprobe

    def build() -> keras.Model:
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
        x = keras.layers.Dense(6, activation="tanh", name="hidden")(x)
        model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        return model

    with strategy.scope():
        mirrored = build()
    single = build()
    single.set_weights(mirrored.get_weights())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 3)).astype("float32")
    y = rng.normal(size=(32, 2)).astype("float32")
    # Traced inside the strategy's scope, where Keras losses divide by the replica count.
    with strategy.scope():
        scoped = tbprobe.Probe(
            mirrored, os.path.join(folder, "scoped"), sample=x[:8], targets=y[:8], images=False
        )
        scoped.log(0)
        scoped.close()
    for name, model in (("mirrored", mirrored), ("single", single)):
        callback = tbprobe.ProbeCallback(
            os.path.join(folder, name), sample=x[:8], targets=y[:8], images=False
        )
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False, callbacks=[callback])
    print(json.dumps({"replicas": strategy.num_replicas_in_sync}), flush=True)


if __name__ == "__main__":
    main()
