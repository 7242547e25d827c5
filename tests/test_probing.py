"""probe_model / select_layers on every kind of Keras 3 model, against independent computations."""

from __future__ import annotations

import re
import warnings

import keras
import numpy as np
import pytest
from conftest import chain

import tbprobe

ATOL = 1e-5


def assert_close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-5, atol=ATOL)


def test_functional_all_layers(tiny_cnn, image_batch):
    probe = tbprobe.probe_model(tiny_cnn)
    outputs = probe(image_batch)
    names = ["conv1", "pool", "conv2", "flatten", "dense", "out"]
    assert list(outputs) == names
    expected = chain([tiny_cnn.get_layer(n) for n in names], image_batch)
    for name, want in zip(names, expected, strict=True):
        assert_close(outputs[name], want)
    assert_close(outputs["out"], tiny_cnn(image_batch))


def test_shapes_reported_by_select_layers(tiny_cnn):
    described = {out.tag: (out.shape, out.dtype) for out in tbprobe.select_layers(tiny_cnn)}
    assert described["conv1"] == ((None, 8, 8, 4), "float32")
    assert described["pool"] == ((None, 4, 4, 4), "float32")
    assert described["flatten"] == ((None, 96), "float32")
    assert type(tbprobe.select_layers(tiny_cnn, "out")[0].layer) is keras.layers.Dense


def test_sequential_with_input_and_with_build(rng):
    x = rng.normal(size=(3, 5)).astype("float32")
    for with_input in (True, False):
        layers = [keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)]
        model = keras.Sequential(([keras.Input((5,))] if with_input else []) + layers)
        if not with_input:
            model.build((None, 5))
        outputs = tbprobe.probe_model(model)(x)
        assert list(outputs) == [layer.name for layer in layers]
        for got, want in zip(outputs.values(), chain(layers, x), strict=True):
            assert_close(got, want)


def test_nested_backbone_inside_classifier(rng):
    """Keras's own `.output` gives 'Graph disconnected' for layers inside nested models."""
    backbone = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5, name="b1"), keras.layers.Dense(4, name="b2")],
        name="backbone",
    )
    neck_in = keras.Input((4,))
    neck = keras.Model(neck_in, keras.layers.Dense(3, name="n1")(neck_in), name="neck")
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(2, name="head")(neck(backbone(inputs)))
    model = keras.Model(inputs, outputs)
    x = rng.normal(size=(2, 6)).astype("float32")

    got = tbprobe.probe_model(model)(x)
    assert list(got) == ["backbone/b1", "backbone/b2", "backbone", "neck/n1", "neck", "head"]
    layers = [*backbone.layers, neck.get_layer("n1"), model.get_layer("head")]
    b1, b2, n1, head = chain(layers, x)
    assert_close(got["backbone/b1"], b1)
    assert_close(got["backbone/b2"], b2)
    assert_close(got["backbone"], b2)
    assert_close(got["neck/n1"], n1)
    assert_close(got["neck"], n1)
    assert_close(got["head"], head)


def test_multi_input_multi_output(rng):
    a = keras.Input((3,), name="a")
    b = keras.Input((4,), name="b")
    joined = keras.layers.Concatenate(name="cat")([a, b])
    hidden = keras.layers.Dense(5, activation="relu", name="hidden")(joined)
    out1 = keras.layers.Dense(1, name="out1")(hidden)
    out2 = keras.layers.Dense(2, name="out2")(joined)
    model = keras.Model({"a": a, "b": b}, [out1, out2])
    x = {
        "a": rng.normal(size=(2, 3)).astype("float32"),
        "b": rng.normal(size=(2, 4)).astype("float32"),
    }

    got = tbprobe.probe_model(model)(x)
    assert set(got) == {"cat", "hidden", "out1", "out2"}
    cat = np.concatenate([x["a"], x["b"]], axis=1)
    assert_close(got["cat"], cat)
    hidden_layer = model.get_layer("hidden")
    assert_close(got["hidden"], hidden_layer(cat))
    assert_close(got["out1"], model.get_layer("out1")(hidden_layer(cat)))
    assert_close(got["out2"], model.get_layer("out2")(cat))


def test_layer_with_several_outputs_gets_one_tag_per_output(rng):
    inputs = keras.Input((5, 3))
    _, h, _ = keras.layers.LSTM(4, return_sequences=True, return_state=True, name="lstm")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(h))
    x = rng.normal(size=(2, 5, 3)).astype("float32")

    got = tbprobe.probe_model(model, layers=["lstm"])(x)
    assert list(got) == ["lstm/0", "lstm/1", "lstm/2"]
    want = model.get_layer("lstm")(x)
    for tag, expected in zip(got, want, strict=True):
        assert_close(got[tag], expected)
    assert got["lstm/0"].shape == (2, 5, 4)


def test_shared_layer_gets_one_tag_per_call(rng):
    """Keras's `.output` silently returns the first call only; tbprobe gives each call."""
    shared = keras.layers.Dense(4, activation="tanh", name="shared")
    inputs = keras.Input((4,))
    first = shared(inputs)
    second = shared(keras.layers.Dense(4, name="mid")(first))
    model = keras.Model(inputs, second)
    x = rng.normal(size=(3, 4)).astype("float32")

    got = tbprobe.probe_model(model)(x)
    assert list(got) == ["shared/call_0", "mid", "shared/call_1"]
    one, _, two = chain([shared, model.get_layer("mid"), shared], x)
    assert_close(got["shared/call_0"], one)
    assert_close(got["shared/call_1"], two)
    assert not np.allclose(one, two)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="subnet")
        self.conv = keras.layers.Conv2D(3, 3, activation="relu", name="conv")
        self.blocks = [keras.layers.Dense(4, name="block_0"), keras.layers.Dense(4, name="block_1")]
        self.pool = keras.layers.GlobalAveragePooling2D(name="gap")
        self.head = keras.layers.Dense(2, name="head")

    def call(self, x, training=False):
        h = self.pool(self.conv(x))
        for block in self.blocks:
            h = keras.activations.relu(block(h))
        return self.head(h)


def test_subclassed_model(image_batch):
    model = Subclassed()
    model(image_batch[:1])
    got = tbprobe.probe_model(model)(image_batch)
    assert list(got) == ["conv", "gap", "block_0", "block_1", "head"]
    conv = model.conv(image_batch)
    gap = model.pool(conv)
    b0 = model.blocks[0](gap)
    b1 = model.blocks[1](keras.activations.relu(b0))
    assert_close(got["conv"], conv)
    assert_close(got["gap"], gap)
    assert_close(got["block_0"], b0)
    assert_close(got["block_1"], b1)
    assert_close(got["head"], model(image_batch))
    # The model is untouched outside the probe call: no instance attribute left behind.
    assert all("call" not in vars(layer) for layer in model.layers)


def test_subclassed_without_recorded_shape_needs_a_sample(image_batch):
    model = Subclassed()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`build\\(\\)` was called on layer 'subnet'")
        model.build((None, 8, 8, 3))
    assert tbprobe.select_layers(model)[0].tag == "conv"
    model._build_shapes_dict = None  # as after a custom build() that records nothing
    with pytest.raises(ValueError, match="Pass sample="):
        tbprobe.select_layers(model)
    outs = tbprobe.select_layers(model, sample=image_batch)
    assert outs[0].shape == (4, 6, 6, 3)


def test_probe_tracks_weights_and_leaves_model_usable(tiny_cnn, image_batch, tmp_path):
    model = keras.models.clone_model(tiny_cnn)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    before = np.asarray(model(image_batch))
    probe = tbprobe.probe_model(model, layers=["dense", "out"])
    probed = probe(image_batch)
    assert_close(model(image_batch), before)

    model.fit(image_batch, np.ones((4, 3), "float32"), epochs=2, verbose=0)
    after = np.asarray(model(image_batch))
    assert not np.allclose(after, before)
    assert_close(probe(image_batch)["out"], after)
    assert not np.allclose(probe(image_batch)["dense"], probed["dense"])

    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    assert_close(restored(image_batch), after)


def test_probe_model_is_usable_with_predict(tiny_cnn, image_batch):
    got = tbprobe.probe_model(tiny_cnn, layers=["conv2"]).predict(image_batch, verbose=0)
    assert list(got) == ["conv2"]
    assert got["conv2"].shape == (4, 4, 4, 6)


class ArgMax(keras.layers.Layer):
    def call(self, x):
        return keras.ops.argmax(x, axis=-1)


@pytest.fixture(scope="module")
def int_output_model() -> keras.Model:
    inputs = keras.Input((4,))
    h = keras.layers.Dense(3, name="dense")(inputs)
    return keras.Model(inputs, [h, ArgMax(name="argmax")(h)])


def test_non_float_output_skipped_with_one_warning(int_output_model):
    with pytest.warns(UserWarning, match=r"skips 1 output.*argmax \(output dtype is int(32|64)"):
        outs = tbprobe.select_layers(int_output_model)
    assert [o.tag for o in outs] == ["dense"]


def test_non_float_output_named_explicitly_is_an_error(int_output_model):
    with pytest.raises(ValueError, match=r"'argmax' was selected explicitly.*int(32|64)"):
        tbprobe.probe_model(int_output_model, layers=["argmax"])


def test_unbuilt_model_is_an_error():
    model = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"not built yet.*model\.build"):
        tbprobe.probe_model(model)


def test_not_a_model_is_a_type_error():
    with pytest.raises(TypeError, match=r"Expected a keras\.Model"):
        tbprobe.probe_model(keras.layers.Dense(2))


def test_unknown_layer_name(tiny_cnn):
    with pytest.raises(ValueError, match=r"'conv3'.*'conv1'.*select_layers"):
        tbprobe.probe_model(tiny_cnn, layers=["conv3"])


def test_sample_of_wrong_shape_is_explained(tiny_cnn):
    with pytest.raises(
        ValueError,
        match=r"(?s)argument `sample`: could not run model 'tiny_cnn'.*\(2, 5\).*\(None, 8, 8, 3\)",
    ):
        tbprobe.select_layers(tiny_cnn, sample=np.zeros((2, 5), "float32"))


def test_sample_of_strings_is_an_error_at_construction(tiny_cnn, tmp_path):
    strings = np.full((2, 8, 8, 3), "a")
    message = (
        "Invalid value for argument `sample`. Received: sample with dtype string "
        "(shape=(2, 8, 8, 3)) for input 'image' of model 'tiny_cnn'. Expected dtype float32 "
        "(shape=(None, 8, 8, 3))"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        tbprobe.Probe(tiny_cnn, tmp_path, sample=strings)
    # Numbers of another dtype are cast by Keras, as in a plain call.
    ints = np.arange(2 * 8 * 8 * 3).reshape(2, 8, 8, 3) % 5
    got = tbprobe.probe_model(tiny_cnn, ["out"], sample=ints)(ints)["out"]
    np.testing.assert_allclose(got, tiny_cnn(ints.astype("float32")), rtol=1e-6)


def two_input_model():
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    joined = keras.layers.Concatenate(name="join")([a, b])
    return keras.Model([a, b], keras.layers.Dense(2, name="head")(joined), name="two")


@pytest.mark.parametrize("by_name", [False, True])
def test_each_input_dtype_is_checked(by_name):
    a, b = np.ones((2, 4), "float32"), np.full((2, 3), b"s")
    sample = {"b": b, "a": a} if by_name else (a, b)
    with pytest.raises(ValueError, match=r"dtype string \(shape=\(2, 3\)\) for input 'b'"):
        tbprobe.select_layers(two_input_model(), sample=sample)


def test_string_inputs_take_strings_only():
    words = keras.Input((2,), dtype="string", name="words")
    ids = keras.layers.StringLookup(vocabulary=["a", "b"], name="lookup")(words)
    model = keras.Model(words, keras.layers.Embedding(3, 4, name="embed")(ids), name="text")
    sample = np.array([["a", "b"], ["b", "x"]])
    got = tbprobe.probe_model(model, ["embed"], sample=sample)(sample)["embed"]
    np.testing.assert_allclose(got, model(sample), rtol=1e-6)
    with pytest.raises(
        ValueError, match=r"dtype float32 .* for input 'words'.*Expected dtype string"
    ):
        tbprobe.select_layers(model, sample=np.zeros((2, 2), "float32"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("factory", "size"),
    [(keras.applications.ResNet50, 64), (keras.applications.MobileNetV2, 96)],
)
def test_keras_applications_all_layers(factory, size):
    model = factory(weights=None, input_shape=(size, size, 3), classes=10)
    x = np.random.default_rng(2).normal(size=(2, size, size, 3)).astype("float32")
    got = tbprobe.probe_model(model)(x)
    layer_names = [layer.name for layer in model.layers[1:]]
    assert sorted(got) == sorted(layer_names)
    reference = keras.Model(model.input, [model.get_layer(n).output for n in layer_names[::7]])
    for name, want in zip(layer_names[::7], reference(x, training=False), strict=True):
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-4)
    assert_close(got[layer_names[-1]], model(x, training=False))


def test_run_consuming_hands_over_each_output_as_made(tiny_cnn, image_batch):
    import tensorflow as tf

    probe = tbprobe.probe_model(tiny_cnn)

    @tf.function
    def sums(x):
        consumed = {}

        def consume(output, tensor, mask):
            assert output.kind == "activation" and mask is None
            consumed[output.tag] = tf.reduce_sum(tensor)
            return [consumed[output.tag]]

        probe.run_consuming(x, consume)
        return consumed

    got = sums(image_batch)
    assert list(got) == [out.tag for out in probe.probed_outputs]
    for tag, tensor in probe(image_batch).items():
        np.testing.assert_allclose(got[tag], np.sum(tensor), rtol=1e-5)
