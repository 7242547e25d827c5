"""ProbeCallback in real model.fit runs: tags, steps, coexistence with Keras callbacks."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from tb_helpers import read_events

import tbprobe


def make_model(jit_compile=False, steps_per_execution=1) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer="sgd",
        loss="mse",
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return model


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 8, 8, 3)).astype("float32"), rng.normal(size=(64, 2)).astype(
        "float32"
    )


def probe_steps(run):
    return read_events(run / "probe")["conv/mean"]["steps"]


def test_fit_logs_every_epoch_at_the_global_step(data, tmp_path):
    x, y = data
    callback = tbprobe.ProbeCallback(tmp_path, sample=x[:4])
    make_model().fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[callback])
    events = read_events(tmp_path / "probe")
    assert events["conv/mean"]["steps"] == [0, 8, 16, 24]
    assert {"conv/activations", "conv/feature_maps", "gap/dead_units", "head/heatmap"} <= set(
        events
    )


def test_every_n_epochs(data, tmp_path):
    x, y = data
    callback = tbprobe.ProbeCallback(tmp_path, sample=x[:4], every_n_epochs=2)
    make_model().fit(x, y, batch_size=8, epochs=5, verbose=0, callbacks=[callback])
    assert probe_steps(tmp_path) == [0, 16, 32]


def test_without_the_initial_log(data, tmp_path):
    x, y = data
    callback = tbprobe.ProbeCallback(tmp_path, sample=x[:4], log_on_train_begin=False)
    make_model().fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback])
    assert probe_steps(tmp_path) == [8, 16]


def test_no_event_file_before_the_first_log(data, tmp_path):
    x, _ = data
    run = tmp_path / "run"
    callback = tbprobe.ProbeCallback(run, sample=x[:4])
    callback.set_model(make_model())
    assert callback.probe is not None  # built (and checked) at once
    assert list(run.rglob("*")) == [run / "probe"]  # the folder, checked at construction


def test_batch_hooks_only_when_asked_for(data, tmp_path):
    x, _ = data
    epoch_only = tbprobe.ProbeCallback(tmp_path, sample=x[:4])
    batched = tbprobe.ProbeCallback(tmp_path, sample=x[:4], every_n_batches=3)
    # Keras 3 dispatches batches asynchronously (on backends that allow it) only when every
    # callback's batch hooks are the base class's, which Keras marks with `_is_default`.
    assert getattr(epoch_only.on_train_batch_end, "_is_default", False)
    assert not getattr(batched.on_train_batch_end, "_is_default", False)


@pytest.mark.parametrize(
    ("steps_per_execution", "expected"),
    [(1, [0, 3, 6, 8, 9, 12, 15, 16]), (2, [0, 4, 6, 8, 10, 12, 16])],
)
def test_every_n_batches(data, tmp_path, steps_per_execution, expected):
    x, y = data
    callback = tbprobe.ProbeCallback(tmp_path, sample=x[:4], every_n_batches=3)
    model = make_model(steps_per_execution=steps_per_execution)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback])
    assert probe_steps(tmp_path) == expected


def test_second_fit_appends(data, tmp_path):
    x, y = data
    model = make_model()
    callback = tbprobe.ProbeCallback(tmp_path, sample=x[:4])
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[callback])
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[callback])
    # The second fit starts at step 8, logged already at the end of the first.
    assert probe_steps(tmp_path) == [0, 8, 16]
    assert len(list((tmp_path / "probe").glob("events.out.tfevents.*"))) == 2


def test_beside_keras_tensorboard_and_other_callbacks(data, tmp_path):
    x, y = data
    callbacks = [
        keras.callbacks.TensorBoard(tmp_path, update_freq=5),
        tbprobe.ProbeCallback(tmp_path, sample=x[:4], every_n_batches=4),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=5),
        keras.callbacks.ModelCheckpoint(tmp_path / "best.keras", monitor="val_loss"),
    ]
    model = make_model()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=callbacks, validation_split=0.25)
    assert {p.name for p in tmp_path.iterdir()} >= {"train", "validation", "probe", "best.keras"}
    # Keras's callback gates every summary with record_if(step % 5 == 0): its own batch_loss
    # lands at steps 5 and 10 only (and its epoch_loss not at all); ours at every 4th batch.
    assert read_events(tmp_path / "train")["batch_loss"]["steps"] == [5, 10]
    assert probe_steps(tmp_path) == [0, 4, 6, 8, 12]
    restored = keras.models.load_model(tmp_path / "best.keras")
    assert restored.predict(x[:2], verbose=0).shape == (2, 2)


def test_jit_compile_and_steps_per_execution(data, tmp_path):
    x, y = data
    model = make_model(jit_compile=True, steps_per_execution=4)
    callback = tbprobe.ProbeCallback(tmp_path, sample=x[:4])
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback])
    assert probe_steps(tmp_path) == [0, 8, 16]
    conv = np.asarray(model.get_layer("conv")(x[:4]))
    last_mean = read_events(tmp_path / "probe")["conv/mean"]["values"][-1]
    assert last_mean == pytest.approx(conv.mean(), rel=1e-5)


def test_mixed_float16(data, tmp_path):
    x, y = data
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = make_model()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    callback = tbprobe.ProbeCallback(tmp_path, sample=x[:4])
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[callback])
    assert [o.dtype for o in callback.probe.outputs] == ["float16", "float16", "float16"]
    assert probe_steps(tmp_path) == [0, 8]


def test_dataset_sample_and_dataset_training(data, tmp_path):
    x, y = data
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    callback = tbprobe.ProbeCallback(tmp_path, sample=dataset)
    make_model().fit(dataset, epochs=1, verbose=0, callbacks=[callback], shuffle=False)
    np.testing.assert_array_equal(callback.probe.sample.numpy(), x[:8])
    assert probe_steps(tmp_path) == [0, 8]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"every_n_epochs": 0}, ValueError, r"every_n_epochs=0\. Expected a positive integer"),
        ({"every_n_epochs": -1}, ValueError, r"every_n_epochs=-1"),
        ({"every_n_epochs": 1.5}, ValueError, r"every_n_epochs=1\.5"),
        ({"every_n_batches": 0}, ValueError, r"every_n_batches=0"),
        ({"bukets": 10}, TypeError, r"Unknown probe option 'bukets'\. Did you mean 'buckets'\?"),
        ({"buckets": 0}, ValueError, r"buckets=0"),
        ({"sample": None}, ValueError, r"Missing argument `sample`"),
    ],
)
def test_bad_arguments_fail_at_construction(data, tmp_path, kwargs, error, message):
    x, _ = data
    arguments = {"sample": x[:4], **kwargs}
    with pytest.raises(error, match=message):
        tbprobe.ProbeCallback(tmp_path, **arguments)


def test_wrong_sample_fails_when_the_model_arrives(data, tmp_path):
    x, y = data
    callback = tbprobe.ProbeCallback(tmp_path, sample=np.zeros((4, 5, 5, 3), "float32"))
    with pytest.raises(ValueError, match=r"(?s)inputs shape=\(4, 5, 5, 3\).*\(None, 8, 8, 3\)"):
        make_model().fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    assert not list((tmp_path / "probe").iterdir())


def test_custom_training_loop(data, tmp_path):
    x, y = data
    model = make_model()
    optimizer = keras.optimizers.SGD(0.1)
    probe = tbprobe.Probe(model, tmp_path, sample=x[:4], every=2)

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(xb, training=True) - yb))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    with probe:
        for xb, yb in tf.data.Dataset.from_tensor_slices((x, y)).batch(8):
            train_step(xb, yb)
            probe.log(optimizer.iterations)
    assert probe_steps(tmp_path) == [2, 4, 6, 8]
