"""Gradients and weights: Probe/ProbeCallback with targets, read back and compared with
independent computations (eager GradientTapes on split models, weights copied by hand)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from numpy_stats import layer_statistics_numpy
from tb_helpers import read_events

import tbprobe

BUCKETS = 12


def rms(arrays) -> float:
    arrays = [np.asarray(a, np.float64).ravel() for a in arrays]
    flat = np.concatenate(arrays)
    return float(np.sqrt(np.mean(flat**2)))


def last(events, tag):
    return float(events[tag]["values"][-1])


def mlp_cnn(optimizer="adam") -> keras.Model:
    """conv -> flatten -> hidden (relu) -> out, compiled with MSE."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(5, activation="relu", name="hidden")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    model.compile(optimizer, "mse")
    return model


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6, 6, 2)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    return x, y


def output_gradients(layers, x, loss_fn) -> dict[str, np.ndarray]:
    """dLoss/dOutput of each layer of a chain, each from its own eager tape that watches the
    output and runs the rest of the chain (a split of the model)."""
    grads = {}
    for i, layer in enumerate(layers):
        with tf.GradientTape() as tape:
            h = x
            for first in layers[: i + 1]:
                h = first(h, training=False)
            tape.watch(h)
            out = h
            for rest in layers[i + 1 :]:
                out = rest(out, training=False)
            loss = loss_fn(out)
        grads[layer.name] = tape.gradient(loss, h).numpy()
    return grads


def test_output_and_weight_gradients_match_eager_tapes(data, tmp_path):
    x, y = data
    model = mlp_cnn()
    with tbprobe.Probe(model, tmp_path, sample=x, targets=y, buckets=BUCKETS) as probe:
        probe.log(0)
    events = read_events(tmp_path / "probe")

    layers = [model.get_layer(name) for name in ("conv", "flatten", "hidden", "out")]
    mse = keras.losses.MeanSquaredError()
    grads = output_gradients(layers, x, lambda out: mse(y, out))
    for tag, g in grads.items():
        assert last(events, f"{tag}/gradient_rms") == pytest.approx(rms([g]), rel=1e-5)
        assert last(events, f"{tag}/gradient_nonfinite") == 0
        want = layer_statistics_numpy(g, buckets=BUCKETS, unit_axis=None)["histogram"]
        got = events[f"{tag}/gradients"]["values"][-1]
        np.testing.assert_allclose(got[:, :2], want[:, :2], rtol=1e-4, atol=1e-7)
        assert got[:, 2].sum() == pytest.approx(g.size)

    assert "flatten/weight_rms" not in events
    for layer in (model.get_layer(name) for name in ("conv", "hidden", "out")):
        with tf.GradientTape() as tape:
            loss = mse(y, model(x, training=False))
        weight_grads = tape.gradient(loss, layer.trainable_weights)
        want_grad = rms([g.numpy() for g in weight_grads])
        want_weight = rms([w.numpy() for w in layer.trainable_weights])
        assert last(events, f"{layer.name}/weight_gradient_rms") == pytest.approx(want_grad, 1e-5)
        assert last(events, f"{layer.name}/weight_rms") == pytest.approx(want_weight, 1e-6)


def test_update_ratio_matches_weights_copied_around_train_on_batch(data, tmp_path):
    x, y = data
    model = mlp_cnn()
    model.train_on_batch(x, y)  # builds Adam's variables: a step from a trained state
    probe = tbprobe.Probe(model, tmp_path, sample=x[:4], targets=y[:4], every=2)
    assert probe.log(2)
    before = {
        name: [w.numpy().copy() for w in model.get_layer(name).trainable_weights]
        for name in ("conv", "hidden", "out")
    }
    model.train_on_batch(x, y)
    assert not probe.log(3)  # off-schedule, but measures the step after the log at 2
    probe.close()
    events = read_events(tmp_path / "probe")
    for name, old in before.items():
        new = [w.numpy() for w in model.get_layer(name).trainable_weights]
        change = np.sqrt(
            sum(np.sum((a.astype(np.float64) - b) ** 2) for a, b in zip(new, old, strict=True))
        )
        norm = np.sqrt(sum(np.sum(b.astype(np.float64) ** 2) for b in old))
        assert events[f"{name}/update_ratio"]["steps"] == [2]
        assert last(events, f"{name}/update_ratio") == pytest.approx(change / norm, rel=1e-4)
    assert "flatten/update_ratio" not in events


def test_update_ratio_over_several_steps_is_skipped_with_one_warning(data, tmp_path):
    x, y = data
    model = mlp_cnn("sgd")
    probe = tbprobe.Probe(model, tmp_path, sample=x[:4], targets=y[:4], every=10)
    probe.log(0)
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    with pytest.warns(UserWarning, match="update ratio of step 0"):
        probe.measure_update(2)
    probe.close()
    assert not any(tag.endswith("/update_ratio") for tag in read_events(tmp_path / "probe"))


def test_state_unchanged_by_a_log_with_gradients(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(6, name="d1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    outputs = {
        "a": keras.layers.Dense(2, name="a")(x),
        "b": keras.layers.Dense(3, activation="softmax", name="b")(x),
    }
    model = keras.Model(inputs, outputs)
    model.compile("adam", {"a": "mse", "b": "sparse_categorical_crossentropy"})
    rng = np.random.default_rng(2)
    xs = rng.normal(size=(8, 4)).astype("float32")
    ys = {"a": rng.normal(size=(8, 2)).astype("float32"), "b": rng.integers(0, 3, size=8)}
    model.train_on_batch(xs, ys)

    def state():
        variables = model.variables + model.optimizer.variables + model.metrics_variables
        return [v.numpy().copy() for v in variables]

    before = state()
    with tbprobe.Probe(model, tmp_path, sample=xs, targets=ys) as probe:
        probe.log(0)
        probe.log(1)  # measures an "update" of no training step: no ratio of a real step
    after = state()
    assert len(before) == len(after)
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)
    events = read_events(tmp_path / "probe")
    assert last(events, "bn/update_ratio") == 0  # nothing trained between the two logs


def test_multi_output_loss_dict_loss_weights_and_regularizers(tmp_path):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((5,))
    trunk = keras.layers.Dense(
        4,
        name="trunk",
        kernel_regularizer=keras.regularizers.L2(0.1),
        activity_regularizer=keras.regularizers.L2(0.05),
    )(inputs)
    model = keras.Model(
        inputs,
        {
            "reg": keras.layers.Dense(2, name="reg")(trunk),
            "cls": keras.layers.Dense(3, name="cls")(trunk),
        },
    )
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("sgd", loss={"reg": "mse", "cls": ce}, loss_weights={"reg": 0.3, "cls": 2.0})
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 5)).astype("float32")
    y = {"reg": rng.normal(size=(6, 2)).astype("float32"), "cls": rng.integers(0, 3, size=6)}
    with tbprobe.Probe(model, tmp_path, sample=x, targets=y) as probe:
        probe.log(0)
    events = read_events(tmp_path / "probe")

    trunk_layer, reg, cls = (model.get_layer(n) for n in ("trunk", "reg", "cls"))
    mse = keras.losses.MeanSquaredError()
    with tf.GradientTape(persistent=True) as tape:
        h = trunk_layer(x)
        tape.watch(h)
        out_reg, out_cls = reg(h), cls(h)
        loss = 0.3 * mse(y["reg"], out_reg) + 2.0 * ce(y["cls"], out_cls)
        loss += 0.1 * tf.reduce_sum(tf.square(trunk_layer.kernel))
        loss += 0.05 * tf.reduce_sum(tf.square(h)) / len(x)  # Keras divides by the batch size
    for tag, tensor in (("trunk", h), ("reg", out_reg), ("cls", out_cls)):
        want = rms([tape.gradient(loss, tensor).numpy()])
        assert last(events, f"{tag}/gradient_rms") == pytest.approx(want, rel=1e-5)
    want = rms([g.numpy() for g in tape.gradient(loss, trunk_layer.trainable_weights)])
    assert last(events, "trunk/weight_gradient_rms") == pytest.approx(want, rel=1e-5)


def test_custom_loss_in_a_gradient_tape_loop(data, tmp_path):
    x, y = data
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [keras.Input((6, 6, 2)), keras.layers.Flatten(name="flat"), keras.layers.Dense(2, name="d")]
    )

    def loss_fn(y_true, y_pred):
        return tf.reduce_mean(tf.abs(y_true - y_pred))

    optimizer = keras.optimizers.Adam(0.01)
    probe = tbprobe.Probe(model, tmp_path, sample=x[:4], targets=y[:4], loss=loss_fn, every=2)
    want_gradients, want_ratios = [], []
    for step in range(4):
        # The loop of the README: probe.log(step) at every step, around the training step.
        with tf.GradientTape() as tape:
            out = model(x[:4])
            tape.watch(out)
            loss = loss_fn(y[:4], out)
        gradient_rms = rms([tape.gradient(loss, out).numpy()])
        before = [w.numpy().copy() for w in model.get_layer("d").trainable_weights]
        if probe.log(step):
            want_gradients.append(gradient_rms)
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        if step % 2 == 0:
            after = [w.numpy() for w in model.get_layer("d").trainable_weights]
            change = sum(np.sum((a - b) ** 2.0) for a, b in zip(after, before, strict=True))
            want_ratios.append(np.sqrt(change / sum(np.sum(b**2.0) for b in before)))
    probe.log(4)  # measures the step after the log at 2
    probe.close()
    events = read_events(tmp_path / "probe")
    assert events["d/gradient_rms"]["steps"] == [0, 2, 4]
    np.testing.assert_allclose(events["d/gradient_rms"]["values"][:2], want_gradients, rtol=1e-5)
    assert events["d/update_ratio"]["steps"] == [0, 2]
    np.testing.assert_allclose(events["d/update_ratio"]["values"], want_ratios, rtol=1e-4)


def test_mixed_float16_gradients_are_unscaled(data, tmp_path):
    x, y = data
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(5)
        model = keras.Sequential(
            [
                keras.Input((6, 6, 2)),
                keras.layers.Flatten(name="flat"),
                keras.layers.Dense(8, activation="tanh", name="hidden"),
                keras.layers.Dense(2, name="out", dtype="float32"),
            ]
        )
        model.compile(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()), "mse")
        model.train_on_batch(x, y)  # builds the dynamic scale
        scale = float(model.optimizer.scale_loss(1.0))
        assert scale > 1
        with tbprobe.Probe(model, tmp_path, sample=x, targets=y) as probe:
            probe.log(0)
        mse = keras.losses.MeanSquaredError()
        with tf.GradientTape() as tape:
            h = model.get_layer("flat")(x)
            h = model.get_layer("hidden")(h)
            tape.watch(h)
            loss = mse(y, model.get_layer("out")(h)) * scale
        want = tf.cast(tape.gradient(loss, h), tf.float32).numpy() / scale
    finally:
        keras.mixed_precision.set_global_policy("float32")
    events = read_events(tmp_path / "probe")
    assert last(events, "hidden/gradient_rms") == pytest.approx(rms([want]), rel=1e-3)
    assert last(events, "hidden/gradient_nonfinite") == 0


def test_nan_in_one_layer_reaches_the_layers_behind_it_only(tmp_path):
    keras.utils.set_random_seed(6)
    inputs = keras.Input((4,))
    trunk = keras.layers.Dense(4, name="trunk")(inputs)
    a = keras.layers.Dense(3, name="a1")(trunk)
    b = keras.layers.Dense(3, name="b1")(trunk)
    model = keras.Model(
        inputs, {"a": keras.layers.Dense(2, name="a2")(a), "b": keras.layers.Dense(2, name="b2")(b)}
    )
    model.compile("sgd", {"a": "mse", "b": "mse"})
    kernel = model.get_layer("b1").kernel
    kernel.assign(tf.tensor_scatter_nd_update(kernel, [[0, 0]], [np.nan]))
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4, 4)).astype("float32")
    y = {"a": np.zeros((4, 2), "float32"), "b": np.zeros((4, 2), "float32")}
    with tbprobe.Probe(model, tmp_path, sample=x, targets=y, update_ratio=False) as probe:
        probe.log(0)
    events = read_events(tmp_path / "probe")
    nonfinite = {
        tag: last(events, f"{tag}/gradient_nonfinite") for tag in ("trunk", "a1", "a2", "b1", "b2")
    }
    # The loss of output b is NaN: its gradient is NaN back through b2, b1 and the trunk
    # (b1's NaN weight multiplies every gradient into the trunk); a's branch stays finite.
    assert nonfinite["a1"] == nonfinite["a2"] == 0
    assert nonfinite["b1"] > 0 and nonfinite["b2"] > 0 and nonfinite["trunk"] > 0
    assert np.isfinite(last(events, "a1/gradient_rms"))


def test_targets_checked_at_construction(data, tmp_path):
    x, y = data
    model = mlp_cnn()
    with pytest.raises(ValueError, match=r"model outputs of shape \(8, 2\)"):
        tbprobe.Probe(model, tmp_path, sample=x, targets=np.zeros((8, 3), "float32"))
    with pytest.raises(ValueError, match="Expected 8 targets"):
        tbprobe.Probe(model, tmp_path, sample=x, targets=y[:5])
    uncompiled = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match=r"loss=.*compile"):
        tbprobe.Probe(uncompiled, tmp_path, sample=np.zeros((2, 3)), targets=np.zeros((2, 1)))
    with pytest.raises(TypeError, match="Invalid value for argument `loss`"):
        tbprobe.Probe(
            uncompiled, tmp_path, sample=np.zeros((2, 3)), targets=np.zeros((2, 1)), loss="mse"
        )


def test_dataset_sample_brings_targets_only_with_a_loss(data, tmp_path):
    x, y = data
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    compiled = mlp_cnn()
    with tbprobe.Probe(compiled, tmp_path / "compiled", sample=dataset) as probe:
        probe.log(0)
    uncompiled = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Flatten(name="f")])
    with tbprobe.Probe(uncompiled, tmp_path / "uncompiled", sample=dataset) as probe:
        probe.log(0)
    events = read_events(tmp_path / "compiled" / "probe")
    # The first batch's targets, scored by the compiled loss (independent: an eager tape).
    with tf.GradientTape() as tape:
        out = compiled(x[:4])
        tape.watch(out)
        loss = keras.losses.MeanSquaredError()(y[:4], out)
    assert last(events, "out/gradient_rms") == pytest.approx(rms([tape.gradient(loss, out)]), 1e-5)
    plain = read_events(tmp_path / "uncompiled" / "probe")
    assert not any("gradient" in tag or "weight" in tag for tag in plain)


def test_weight_histograms_and_layout_and_manifest(data, tmp_path):
    from tensorboard.plugins.custom_scalar import layout_pb2

    x, y = data
    model = mlp_cnn()
    with tbprobe.Probe(
        model, tmp_path, sample=x, targets=y, weight_histograms=True, buckets=BUCKETS
    ) as probe:
        probe.log(0)
    events = read_events(tmp_path / "probe")
    hidden = model.get_layer("hidden")
    flat = np.concatenate([w.numpy().ravel() for w in hidden.trainable_weights])
    want = layer_statistics_numpy(flat, buckets=BUCKETS, unit_axis=None)["histogram"]
    np.testing.assert_allclose(events["hidden/weights"]["values"][-1], want, rtol=1e-5)
    assert "flatten/weights" not in events

    layout = layout_pb2.Layout.FromString(events["custom_scalars__config__"]["values"][0].item())
    titles = {chart.title for category in layout.category for chart in category.chart}
    assert {"gradient_rms by layer", "update_ratio by layer"} <= titles
    manifest = events["tbprobe/manifest"]["values"][0].item().decode()
    assert "| gradients | weights |" in manifest
    assert "| `flatten` | Flatten | (8, 48) | float32 | `flatten/heatmap` | yes | no |" in manifest


def test_no_targets_no_gradient_tags(data, tmp_path):
    x, _ = data
    with tbprobe.Probe(mlp_cnn(), tmp_path, sample=x) as probe:
        probe.log(0)
    events = read_events(tmp_path / "probe")
    assert not any("gradient" in tag or "weight" in tag or "update" in tag for tag in events)
    assert "gradients" not in events["tbprobe/manifest"]["values"][0].item().decode()


@pytest.mark.slow
def test_callback_measures_the_update_after_each_log(data, tmp_path):
    x, y = data
    model = mlp_cnn("sgd")
    callback = tbprobe.ProbeCallback(tmp_path, sample=x[:4], targets=y[:4])
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[callback], shuffle=False)
    events = read_events(tmp_path / "probe")
    # Logs at steps 0 (train begin), 2 and 4 (epoch ends); the step after each log but the
    # last is measured.
    assert events["out/gradient_rms"]["steps"] == [0, 2, 4]
    assert events["out/update_ratio"]["steps"] == [0, 2]
    assert all(0 < v < 1 for v in events["out/update_ratio"]["values"])


@pytest.mark.slow
def test_mirrored_strategy_gradients_equal_one_device(tmp_path):
    script = Path(__file__).with_name("distributed_gradients.py")
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["replicas"] == 2
    mirrored = read_events(tmp_path / "mirrored" / "probe")
    single = read_events(tmp_path / "single" / "probe")
    tags = [t for t in single if t.endswith(("gradient_rms", "update_ratio", "weight_rms"))]
    assert len(tags) >= 7 and set(tags) <= set(mirrored)
    for tag in tags:
        assert mirrored[tag]["steps"] == single[tag]["steps"]
        np.testing.assert_allclose(
            mirrored[tag]["values"], single[tag]["values"], rtol=1e-5, err_msg=tag
        )
    np.testing.assert_allclose(
        mirrored["head/gradients"]["values"][-1], single["head/gradients"]["values"][-1], 1e-5
    )
    scoped = read_events(tmp_path / "scoped" / "probe")
    for tag in ("conv/gradient_rms", "head/weight_gradient_rms"):
        assert last(scoped, tag) == pytest.approx(single[tag]["values"][0], rel=1e-5)


class TwoDense(keras.Model):
    def __init__(self):
        super().__init__()
        self.first = keras.layers.Dense(4, activation="tanh", name="first")
        self.second = keras.layers.Dense(2, name="second")

    def call(self, x):
        return self.second(self.first(x))


def test_subclassed_model_with_a_keras_loss_and_sample_weights(tmp_path):
    keras.utils.set_random_seed(8)
    model = TwoDense()
    rng = np.random.default_rng(9)
    x = rng.normal(size=(5, 3)).astype("float32")
    y = rng.normal(size=(5, 2)).astype("float32")
    weights = np.array([1, 0, 2, 1, 0.5], "float32")
    model(x)
    loss = keras.losses.MeanSquaredError()
    dataset = tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(5)
    with tbprobe.Probe(model, tmp_path, sample=dataset, loss=loss) as probe:
        probe.log(0)
    with tf.GradientTape() as tape:
        hidden = model.first(x)
        tape.watch(hidden)
        value = loss(y, model.second(hidden), sample_weight=weights)
    events = read_events(tmp_path / "probe")
    want = rms([tape.gradient(value, hidden).numpy()])
    assert last(events, "first/gradient_rms") == pytest.approx(want, rel=1e-5)


def test_update_ratio_and_weight_histograms_without_targets(data, tmp_path):
    x, y = data
    model = mlp_cnn("sgd")
    probe = tbprobe.Probe(
        model, tmp_path, sample=x, update_ratio=True, weight_histograms=True, images=False
    )
    probe.log(0)
    before = [w.numpy().copy() for w in model.get_layer("out").trainable_weights]
    model.train_on_batch(x, y)
    probe.measure_update(1)
    probe.close()
    events = read_events(tmp_path / "probe")
    after = [w.numpy() for w in model.get_layer("out").trainable_weights]
    want = np.sqrt(sum(np.sum((a - b) ** 2.0) for a, b in zip(after, before, strict=True)))
    want /= np.sqrt(sum(np.sum(b**2.0) for b in before))
    assert last(events, "out/update_ratio") == pytest.approx(want, rel=1e-4)
    assert last(events, "out/weight_rms") == pytest.approx(rms(before), rel=1e-6)
    assert "out/weights" in events
    assert not any("gradient" in tag for tag in events)
