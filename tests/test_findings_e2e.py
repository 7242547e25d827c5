"""Diagnosis in real training: `Probe(checks=...)` and `ProbeCallback(on_finding=...)` find dead
layers and localise a NaN, warn once, write `tbprobe/health` and `tbprobe/findings`, and find
nothing on a healthy run."""

from __future__ import annotations

import logging

import keras
import numpy as np
import pytest
from conftest import chain
from tb_helpers import read_events

import tbprobe

DENSE = ("d1", "d2", "d3", "d4")


def dense_stack(seed: int = 0) -> keras.Model:
    """Four Dense layers, tanh: no ReLU, so no fused kernel can turn a NaN into 0."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    x = inputs
    for name in DENSE[:-1]:
        x = keras.layers.Dense(8, activation="tanh", name=name)(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name=DENSE[-1])(x))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    return model


def relu_mlp() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    # A bias of 1: `out` stays alive (constant) when `hidden` dies.
    return keras.Model(inputs, keras.layers.Dense(2, bias_initializer="ones", name="out")(hidden))


@pytest.fixture(scope="module")
def vectors() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 6)).astype("float32"), rng.normal(size=(64, 2)).astype("float32")


def small_cnn(learning_rate: float) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def test_high_learning_rate_dead_layers_named_at_the_step_they_died(tmp_path, image_batch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 2, 128)
    callback = tbprobe.ProbeCallback(tmp_path, sample=x[:16])
    small_cnn(0.3).fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[callback])
    found = {f.tag: f.first_step for f in callback.probe.findings() if f.rule == "dead_layer"}
    # Independently, from the event files: outputs >= 90% dead at the last log and not at the
    # first, each since the first log from which it stayed so.
    events = read_events(tmp_path / "probe")
    expected = {}
    for tag in ("conv1", "conv2", "gap", "logits"):
        steps, values = events[f"{tag}/dead_units"]["steps"], events[f"{tag}/dead_units"]["values"]
        dead = [float(v) >= 0.9 for v in values]
        if dead[-1] and not dead[0]:
            expected[tag] = steps[len(dead) - dead[::-1].index(False)]
    assert "conv2" in expected  # the learning rate did kill a conv layer
    assert found == expected
    assert events["tbprobe/findings"]["values"][-1] == len(callback.probe.findings())


def test_nan_in_a_middle_layers_weights_is_localised_to_that_layer(tmp_path, vectors):
    x, y = vectors
    model = dense_stack()
    probe = tbprobe.Probe(model, tmp_path, sample=x[:8])
    probe.log(0)
    assert probe.findings() == []
    kernel = model.get_layer("d2").kernel
    kernel.assign(np.where(np.eye(*kernel.shape, dtype=bool), np.nan, kernel.numpy()))
    probe.log(1)
    stats = probe.stats()
    # The probe's own compiled outputs: d1 finite, d2 on non-finite; eager agrees on d1.
    assert stats["d1"]["nonfinite"] == 0 and stats["d2"]["nonfinite"] > 0
    assert np.isfinite(chain([model.get_layer("d1")], x[:8])[0]).all()
    (finding,) = probe.findings()
    assert (finding.rule, finding.tag, finding.first_step) == ("first_nonfinite", "d2", 1)
    assert finding.value == pytest.approx(stats["d2"]["nonfinite"])
    # A training step spreads the NaN to every weight: the finding still names d2.
    model.fit(x, y, verbose=0, epochs=1, batch_size=64)
    probe.log(2)
    assert probe.stats()["d1"]["nonfinite"] > 0
    assert [(f.tag, f.first_step, f.last_step) for f in probe.findings()] == [("d2", 1, 2)]
    probe.close()


def test_fifty_logs_of_a_dead_layer_warn_once_and_once_more_when_it_clears(
    tmp_path, vectors, caplog
):
    x, _ = vectors
    model = relu_mlp()
    hidden = model.get_layer("hidden")
    bias = hidden.bias.numpy()
    probe = tbprobe.Probe(model, tmp_path, sample=x[:8])
    with caplog.at_level(logging.WARNING, logger="tbprobe"), probe:
        probe.log(0)
        hidden.bias.assign(np.full_like(bias, -1e3))  # every ReLU unit now outputs 0
        for step in range(1, 51):
            probe.log(step)
        hidden.bias.assign(bias)
        probe.log(51)
    records = [r.getMessage() for r in caplog.records if r.name == "tbprobe"]
    assert len(records) == 2
    assert records[0].startswith("dead layer in hidden since step 1: 100% of its units")
    assert records[1] == "cleared at step 51: dead layer in hidden (from step 1)"
    events = read_events(tmp_path / "probe")
    assert events["tbprobe/health"]["steps"] == [0, 1, 51]
    health = [v.item().decode() for v in events["tbprobe/health"]["values"]]
    assert "| dead layer | `hidden` | step 1 |" in health[1]
    assert health[0].startswith("**0 finding(s) at step 0**")
    counts = [float(v) for v in events["tbprobe/findings"]["values"]]
    assert counts == [0.0] + [1.0] * 50 + [0.0]


def test_checks_false_writes_no_diagnosis(tmp_path, vectors):
    x, _ = vectors
    with tbprobe.Probe(relu_mlp(), tmp_path, sample=x[:8], checks=False) as probe:
        probe.log(0)
        assert probe.findings() == []
    assert not {"tbprobe/health", "tbprobe/findings"} & set(read_events(tmp_path / "probe"))


def nan_targets(y: np.ndarray) -> np.ndarray:
    """Targets whose loss is NaN: the first training step turns every weight into NaN."""
    return np.full_like(y, np.nan)


@pytest.mark.parametrize(("on_finding", "epochs_run"), [("warn", 4), ("stop", 1)])
def test_on_finding_stop_ends_fit_after_the_log_that_found_it(
    tmp_path, vectors, on_finding, epochs_run, caplog
):
    x, y = vectors
    callback = tbprobe.ProbeCallback(tmp_path, sample=x[:8], on_finding=on_finding)
    history = dense_stack().fit(
        x, nan_targets(y), epochs=4, batch_size=32, verbose=0, callbacks=[callback]
    )
    assert len(history.epoch) == epochs_run
    assert [f.rule for f in callback.probe.findings()] == ["first_nonfinite"]


def test_on_finding_raise_carries_the_findings(tmp_path, vectors, caplog):
    x, y = vectors
    callback = tbprobe.ProbeCallback(tmp_path, sample=x[:8], on_finding="raise")
    with pytest.raises(tbprobe.FindingsError) as raised:
        dense_stack().fit(x, nan_targets(y), epochs=4, verbose=0, callbacks=[callback])
    (finding,) = raised.value.findings
    assert (finding.rule, finding.tag) == ("first_nonfinite", "d1")


def test_callback_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"Received: on_finding='halt'"):
        tbprobe.ProbeCallback(tmp_path, sample=np.zeros((1, 6)), on_finding="halt")
    with pytest.raises(TypeError, match="Did you mean 'saturated'"):
        tbprobe.ProbeCallback(tmp_path, sample=np.zeros((1, 6)), checks=tbprobe.Checks(saturate=1))


@pytest.mark.slow
def test_healthy_cnn_trained_normally_has_no_finding(tmp_path):
    from demo.data import make_shapes
    from demo.model import build_cnn, compile_cnn

    x, y = make_shapes(640, seed=0)
    callback = tbprobe.ProbeCallback(tmp_path, sample=x[:16])
    model = compile_cnn(build_cnn(seed=0), 1e-3)
    model.fit(x, y, batch_size=64, epochs=4, verbose=0, callbacks=[callback])
    assert callback.probe.findings() == []
    counts = read_events(tmp_path / "probe")["tbprobe/findings"]["values"]
    assert [float(c) for c in counts] == [0.0] * 5


@pytest.mark.slow
def test_small_transformer_trained_normally_has_no_finding(tmp_path):
    keras.utils.set_random_seed(0)
    tokens = np.random.default_rng(0).integers(0, 20, (512, 12))
    labels = (tokens == 3).any(axis=1).astype("int32")  # does token 3 occur?
    inputs = keras.Input((12,), dtype="int32")
    x = keras.layers.Embedding(20, 16, name="embed")(inputs)
    attended = keras.layers.MultiHeadAttention(2, 8, name="attention")(x, x)
    x = keras.layers.LayerNormalization(name="norm1")(x + attended)
    ffn = keras.layers.Dense(32, activation="relu", name="ffn1")(x)
    x = keras.layers.LayerNormalization(name="norm2")(x + keras.layers.Dense(16, name="ffn2")(ffn))
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    callback = tbprobe.ProbeCallback(tmp_path, sample=tokens[:16])
    history = model.fit(tokens, labels, batch_size=32, epochs=3, verbose=0, callbacks=[callback])
    assert history.history["accuracy"][-1] > 0.9  # it did learn
    assert callback.probe.findings() == []
