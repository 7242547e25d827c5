"""Real-world transformers: keras-hub backbones built from small constructor arguments (no
presets, no downloads). Coverage = probed outputs with layers=None / leaf layers called in the
forward pass; attention maps of their MultiHeadAttention-based layers logged."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from tb_helpers import read_events

import tbprobe
from tbprobe.probing import spec_of
from tbprobe.recording import recording_calls
from tbprobe.selection import layer_paths, sublayers

keras_hub = pytest.importorskip("keras_hub")

SIZES = {"num_layers": 2, "num_heads": 2, "hidden_dim": 16, "intermediate_dim": 32}


def tokens(**names):
    rng = np.random.default_rng(0)
    padding = np.ones((2, 8), "int32")
    padding[1, 6:] = 0  # the second sequence is padded: masked keys
    batch = {}
    for name, kind in names.items():
        batch[name] = rng.integers(1, 50, (2, 8)).astype("int32") if kind == "ids" else padding
    return batch


BACKBONES = {
    "vit": (
        lambda: keras_hub.models.ViTBackbone(
            image_shape=(32, 32, 3),
            patch_size=8,
            num_layers=2,
            num_heads=2,
            hidden_dim=16,
            mlp_dim=32,
        ),
        lambda: np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32"),
        2,
    ),
    "bert": (
        lambda: keras_hub.models.BertBackbone(vocabulary_size=50, max_sequence_length=8, **SIZES),
        lambda: tokens(token_ids="ids", segment_ids="mask", padding_mask="mask"),
        2,
    ),
    "gpt2": (
        lambda: keras_hub.models.GPT2Backbone(vocabulary_size=50, max_sequence_length=8, **SIZES),
        lambda: tokens(token_ids="ids", padding_mask="mask"),
        2,
    ),
    "t5": (  # T5's attention is its own layer, not a MultiHeadAttention: no attention maps
        lambda: keras_hub.models.T5Backbone(vocabulary_size=50, **SIZES),
        lambda: tokens(
            encoder_token_ids="ids",
            encoder_padding_mask="mask",
            decoder_token_ids="ids",
            decoder_padding_mask="mask",
        ),
        0,
    ),
}


def leaves_called(model, sample):
    """Paths of the layers without sublayers that run in the plain forward pass."""
    paths = layer_paths(model)
    leaves = {path: layer for path, layer in paths.items() if not sublayers(layer)}
    called = set()

    @tf.function(autograph=False)
    def forward(x):
        with recording_calls(leaves) as records:
            model(x, training=False)
        called.update(record.path for record in records)

    forward.get_concrete_function(spec_of(sample))
    return called


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Layer '.*' \\(of type T5.*does not support masking")
@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_coverage_and_attention_maps(name, tmp_path):
    build, make_sample, attention_layers = BACKBONES[name]
    keras.utils.set_random_seed(0)
    model, sample = build(), make_sample()
    before = keras.tree.map_structure(np.asarray, model(sample))

    with tbprobe.Probe(model, tmp_path, sample=sample) as probe:
        probe.log(0)
    outputs = probe.outputs
    called = leaves_called(model, sample)
    coverage = len(outputs) / len(called)
    print(
        f"{name}: {len(outputs)} probed outputs / {len(called)} leaf layers called = {coverage:.2f}"
    )
    assert coverage >= 0.9
    # Every running leaf is probed, except the softmax/dropout inside attention layers, whose
    # output is the attention probabilities, logged under <attention layer>/attention.
    probed = {out.path for out in outputs}
    missing = {path for path in called - probed if path.rsplit("/", 1)[0] not in probed}
    assert not missing

    events = read_events(tmp_path / "probe")
    maps = [tag for tag, event in events.items() if tag.endswith("/attention")]
    assert len(maps) == attention_layers
    assert all(events[tag]["plugin"] == "images" for tag in maps)
    for tag in maps:
        entropy = events[f"{tag}_entropy"]["values"][0]
        assert 0 < entropy <= 1
    after = keras.tree.map_structure(np.asarray, model(sample))
    for got, want in zip(keras.tree.flatten(after), keras.tree.flatten(before), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
