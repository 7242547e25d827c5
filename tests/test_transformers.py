"""Probing inside blocks: sublayers of custom layers, Keras wrappers and transformers, against
direct calls of the sublayers; attention maps written and read back."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from tb_helpers import read_events
from test_attention import entropy_twin
from transformer_models import BlockStack, EncoderBlock, SharedTwice, convnext, encoder, vit

import tbprobe
from tbprobe.images import describe_image
from tbprobe.tags import FEATURE_MAPS, HEATMAP

ATOL = 1e-5


def assert_close(actual, expected, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-5, atol=atol)


def block_by_hand(block, x):
    """Each sublayer of an EncoderBlock called directly (eager, Keras's fused attention)."""
    attention = block.attention
    out, probs = attention(x, x, return_attention_scores=True)
    h = block.norm1(x + out)
    f1 = block.ffn[0](h)
    f2 = block.ffn[1](f1)
    return {
        "attention/query": attention.query_dense(x),
        "attention/key": attention.key_dense(x),
        "attention/value": attention.value_dense(x),
        "attention/attention_output": out,
        "attention": attention(x, x),  # without scores: the fused dot_product_attention path
        "attention/attention": probs,
        "norm1": h,
        "ffn_in": f1,
        "ffn_out": f2,
        "norm2": block.norm2(h + f2),
        "": block.norm2(h + f2),
    }


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(3).normal(size=(2, 5, 8)).astype("float32")


def test_every_sublayer_of_every_block_equals_a_direct_call(tokens):
    model = encoder(blocks=2)
    got = tbprobe.probe_model(model)(tokens)
    x = model.get_layer("embed")(tokens)
    expected = {"embed": x}
    for i in range(2):
        block = model.get_layer(f"block_{i}")
        for name, value in block_by_hand(block, x).items():
            expected[f"block_{i}/{name}".rstrip("/")] = value
        x = expected[f"block_{i}"]
    expected["pool"] = model.get_layer("pool")(x)
    expected["head"] = model(tokens)
    assert set(got) == set(expected)
    for tag, value in expected.items():
        assert_close(got[tag], value)
    assert got["block_0/attention/attention"].shape == (2, 2, 5, 5)


def test_probing_leaves_outputs_training_and_saving_intact(tokens, tmp_path):
    model = encoder(blocks=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    before = np.asarray(model(tokens))
    probe = tbprobe.probe_model(model)
    probe(tokens)
    assert_close(model(tokens), before, atol=1e-6)
    layers = [model, *(layer for layer in model._flatten_layers())]
    assert not any({"call", "_compute_attention"} & set(vars(layer)) for layer in layers)

    model.fit(tokens, np.ones((2, 3), "float32"), epochs=2, verbose=0)
    after = np.asarray(model(tokens))
    assert not np.allclose(after, before)
    assert_close(probe(tokens)["head"], after)

    model.save(tmp_path / "encoder.keras")
    restored = keras.models.load_model(tmp_path / "encoder.keras")
    assert_close(restored(tokens), after, atol=1e-6)


def test_vit_logs_attention_maps_and_entropy(tmp_path):
    model = vit()
    images = np.random.default_rng(4).normal(size=(2, 16, 16, 3)).astype("float32")
    with tbprobe.Probe(model, tmp_path, sample=images, max_samples=2) as probe:
        probe.log(0)
    events = read_events(tmp_path / "probe")
    block = model.get_layer("block_0")
    x = model.get_layer("tokens")(model.get_layer("patches")(images))
    _, probs = block.attention(x, x, return_attention_scores=True)
    mean, lowest = entropy_twin(np.asarray(probs))
    assert events["block_0/attention/attention_entropy"]["values"][0] == pytest.approx(mean, 1e-5)
    assert events["block_0/attention/attention_entropy_min"]["values"][0] == pytest.approx(
        lowest, 1e-5
    )
    image = events["block_0/attention/attention"]
    assert image["plugin"] == "images" and len(image["values"][0]) == 2 + 2  # 2 samples
    assert "patches/feature_maps" in events
    assert "block_0/attention/query/heatmap" in events  # (batch, tokens, heads, dim): no grid
    assert "block_0/attention/attention/activations" not in events
    manifest = events["tbprobe/manifest"]["values"][0].item().decode()
    assert "| `block_0/attention/attention` | MultiHeadAttention | (2, 2, 16, 16) |" in manifest
    layout = events["custom_scalars__config__"]["values"][0].item()
    assert b".*/attention_entropy$" in layout and b".*/attention_entropy_min$" in layout


def test_image_kind_follows_the_layer_of_a_rank4_output():
    model = convnext()
    outputs = {out.tag: out for out in tbprobe.select_layers(model)}
    assert describe_image(outputs["block/project"].shape, outputs["block/project"].layer) == (
        FEATURE_MAPS  # a Dense on a feature map keeps it a feature map (pointwise conv)
    )
    assert describe_image(outputs["block/depthwise"].shape, outputs["block/depthwise"].layer) == (
        FEATURE_MAPS
    )
    query = keras.layers.EinsumDense("abc,cde->abde", (2, 4))
    assert describe_image((None, 5, 2, 4), query) == HEATMAP


def test_convnext_block_internals(image_batch):
    model = convnext()
    got = tbprobe.probe_model(model)(image_batch)
    block = model.get_layer("block")
    stem = model.get_layer("stem")(image_batch)
    depthwise = block.depthwise(stem)
    norm = block.norm(depthwise)
    expand = block.expand(norm)
    project = block.project(expand)
    for tag, want in {
        "block/depthwise": depthwise,
        "block/norm": norm,
        "block/expand": expand,
        "block/project": project,
        "block": stem + project,
    }.items():
        assert_close(got[tag], want)


def test_subclassed_model_holding_a_list_of_blocks(tokens):
    model = BlockStack()
    model(tokens)
    got = tbprobe.probe_model(model)(tokens)
    x = tokens
    for i, block in enumerate(model.blocks):
        for name, value in block_by_hand(block, x).items():
            assert_close(got[f"block_{i}/{name}".rstrip("/")], value)
        x = block(x)
    assert_close(got["head"], model(tokens))


def test_bidirectional_lstm_directions_and_no_noise_from_cells(rng):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 3))
    bi = keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True), name="bi")
    model = keras.Model(inputs, bi(inputs))
    x = rng.normal(size=(2, 6, 3)).astype("float32")

    got = tbprobe.probe_model(model)(x)  # the cells run in a while loop: left out silently
    assert set(got) == {"bi", "bi/forward_lstm", "bi/backward_lstm"}
    assert_close(got["bi/forward_lstm"], bi.forward_layer(x))
    assert_close(got["bi/backward_lstm"], bi.backward_layer(x))
    assert_close(got["bi"], model(x))
    with pytest.raises(ValueError, match=r"'bi/forward_lstm/lstm_cell' was selected explicitly"):
        tbprobe.probe_model(model, layers=["bi/forward_lstm/lstm_cell"])


def test_time_distributed_inner_layer(rng):
    inputs = keras.Input((3, 4))
    td = keras.layers.TimeDistributed(keras.layers.Dense(2, name="dense"), name="td")
    model = keras.Model(inputs, td(inputs))
    x = rng.normal(size=(5, 3, 4)).astype("float32")
    got = tbprobe.probe_model(model)(x)
    for step in range(3):  # Keras calls the inner layer once per time step
        assert_close(got[f"td/dense/call_{step}"], td.layer(x[:, step]))
    assert_close(got["td"], model(x))


def test_sublayer_called_twice_and_sublayer_never_called(rng):
    inputs = keras.Input((4,))
    block = SharedTwice(name="twice")
    model = keras.Model(inputs, block(inputs))
    x = rng.normal(size=(3, 4)).astype("float32")

    got = tbprobe.probe_model(model)(x)  # `unused` never runs: no warning, no output
    assert list(got) == ["twice/shared/call_0", "twice/shared/call_1", "twice"]
    first = block.shared(x)
    assert_close(got["twice/shared/call_0"], first)
    assert_close(got["twice/shared/call_1"], block.shared(first))
    with pytest.raises(ValueError, match=r"\['twice/unused'\] are never called"):
        tbprobe.probe_model(model, layers=["unused"])


def test_depth_limits_the_levels(tokens):
    model = encoder(blocks=1)
    tags = {d: [o.tag for o in tbprobe.select_layers(model, depth=d)] for d in (1, 2, 3)}
    assert tags[1] == ["embed", "block_0", "pool", "head"]
    assert "block_0/attention" in tags[2] and "block_0/attention/query" not in tags[2]
    assert "block_0/attention/attention" in tags[2]  # the attention layer is probed at depth 2
    assert tags[3] == [o.tag for o in tbprobe.select_layers(model)]
    assert [o.tag for o in tbprobe.select_layers(model, "query", depth=3)] == [
        "block_0/attention/query"
    ]
    with pytest.raises(ValueError, match=r"No layer matches 'query'"):
        tbprobe.select_layers(model, "query", depth=2)


@pytest.mark.parametrize("depth", [0, -1, 1.5, True, "2"])
def test_bad_depth_is_rejected_at_construction(depth, tmp_path, tokens):
    model = encoder(blocks=1)
    message = rf"Invalid value for argument `depth`. Received: depth={depth!r}"
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        tbprobe.select_layers(model, depth=depth)
    with pytest.raises(ValueError, match="argument `depth`"):
        tbprobe.ProbeCallback(tmp_path, sample=tokens, depth=depth)
    with pytest.raises(ValueError, match="argument `depth`"):
        tbprobe.Probe(model, tmp_path, sample=tokens, depth=depth)


def test_attention_internals_named_explicitly(tokens):
    """The softmax of a MultiHeadAttention never runs on Keras's fused path; while probing, the
    attention runs explicitly, so it can be named and equals the probabilities."""
    model = encoder(blocks=1)
    (tag,) = tbprobe.probe_model(model, layers=[keras.layers.Softmax])(tokens)
    assert tag.startswith("block_0/attention/softmax")  # Keras numbers its name
    x = model.get_layer("embed")(tokens)
    _, probs = model.get_layer("block_0").attention(x, x, return_attention_scores=True)
    assert_close(tbprobe.probe_model(model, layers=[tag])(tokens)[tag], probs)


def test_callback_probes_inside_blocks(tokens, tmp_path):
    model = encoder(blocks=1)
    model.compile(optimizer="adam", loss="mse")
    callback = tbprobe.ProbeCallback(tmp_path, sample=tokens, depth=2)
    model.fit(tokens, np.ones((2, 3), "float32"), epochs=1, verbose=0, callbacks=[callback])
    events = read_events(tmp_path / "probe")
    assert "block_0/attention/attention_entropy" in events
    assert "block_0/norm1/mean" in events and "block_0/attention/query/mean" not in events
    assert events["block_0/attention/attention_entropy"]["steps"] == [0, 1]


def test_run_consuming_hands_attention_with_its_mask(rng):
    inputs = keras.Input((4, 8))
    mask = keras.Input((4, 4), dtype="bool")
    mha = keras.layers.MultiHeadAttention(2, 4, name="mha")
    model = keras.Model([inputs, mask], mha(inputs, inputs, attention_mask=mask))
    x = rng.normal(size=(2, 4, 8)).astype("float32")
    m = np.tril(np.ones((2, 4, 4), bool))
    probe = tbprobe.probe_model(model)

    @tf.function
    def consumed(batch):
        seen = {}

        def consume(output, tensor, key_mask):
            seen[output.tag] = (output.kind, tensor, key_mask)
            return [tf.identity(tensor)]

        probe.run_consuming(batch, consume)
        return {tag: (t, k) for tag, (_, t, k) in seen.items() if k is not None}

    got = consumed([x, m])
    assert list(got) == ["mha/attention"]
    probs, key_mask = got["mha/attention"]
    _, want = mha(x, x, attention_mask=m, return_attention_scores=True)
    assert_close(probs, want)
    np.testing.assert_array_equal(np.broadcast_to(key_mask, m.shape), m)


class Stage(keras.layers.Layer):
    """A block of blocks: two EncoderBlocks and a projection, all held by one custom layer."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [EncoderBlock(8, name=f"block_{i}") for i in range(2)]
        self.proj = keras.layers.Dense(8, name="proj")

    def call(self, x):
        for block in self.blocks:
            x = block(x)
        return self.proj(x)


def test_blocks_nested_in_blocks(tokens):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 8))
    stage = Stage(name="stage")
    model = keras.Model(inputs, stage(inputs))
    got = tbprobe.probe_model(model)(tokens)
    x = tokens
    for i, block in enumerate(stage.blocks):
        for name, value in block_by_hand(block, x).items():
            assert_close(got[f"stage/block_{i}/{name}".rstrip("/")], value)
        x = block(x)
    assert_close(got["stage/proj"], stage.proj(x))
    assert_close(got["stage"], model(tokens))
