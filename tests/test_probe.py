"""Probe: event files read back with TensorBoard's reader, compared with numpy."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from numpy_stats import layer_statistics_numpy
from tb_helpers import read_events

import tbprobe
from tbprobe.images import colormap_palette

METRICS = {
    "activations": "histograms",
    "sparsity": "scalars",
    "dead_units": "scalars",
    "mean": "scalars",
    "std": "scalars",
    "nonfinite": "scalars",
    "mean_minus_std": "scalars",
    "mean_plus_std": "scalars",
}


@pytest.fixture(scope="module")
def logged_run(tiny_cnn, image_batch, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    probe = tbprobe.Probe(tiny_cnn, run, sample=image_batch, buckets=12)
    assert probe.log(0) and probe.log(5)
    probe.close()
    return run, probe


def test_exact_tags_and_plugins(logged_run):
    run, _ = logged_run
    events = read_events(run / "probe")
    expected = {"tbprobe/manifest": "text", "custom_scalars__config__": "custom_scalars"}
    expected |= {"tbprobe/health": "text", "tbprobe/findings": "scalars"}  # the diagnosis
    for tag in ["conv1", "pool", "conv2", "flatten", "dense", "out"]:
        expected.update({f"{tag}/{metric}": plugin for metric, plugin in METRICS.items()})
    for tag in ["conv1", "pool", "conv2"]:
        expected[f"{tag}/feature_maps"] = "images"
    for tag in ["flatten", "dense", "out"]:
        expected[f"{tag}/heatmap"] = "images"
    assert {tag: e["plugin"] for tag, e in events.items()} == expected
    assert events["conv1/sparsity"]["steps"] == [0, 5]
    assert events["tbprobe/manifest"]["steps"] == [0]
    assert events["tbprobe/health"]["steps"] == [0]  # and where the findings change
    assert events["tbprobe/findings"]["steps"] == [0, 5]


def test_values_match_numpy(logged_run, tiny_cnn, image_batch):
    run, probe = logged_run
    events = read_events(run / "probe")
    activations = tbprobe.probe_model(tiny_cnn)(image_batch)
    for tag, x in activations.items():
        want = layer_statistics_numpy(np.asarray(x), buckets=12)
        for name in ("sparsity", "dead_units", "mean", "std", "nonfinite"):
            got = events[f"{tag}/{name}"]["values"][-1]
            np.testing.assert_allclose(
                got, want[name], rtol=1e-5, atol=1e-6, err_msg=f"{tag}/{name}"
            )
            assert probe.stats()[tag][name] == pytest.approx(want[name], rel=1e-5, abs=1e-6)
        histogram = events[f"{tag}/activations"]["values"][-1]
        assert histogram.shape == (12, 3)
        np.testing.assert_array_equal(histogram[:, 2], want["histogram"][:, 2])
        np.testing.assert_allclose(histogram[:, :2], want["histogram"][:, :2], rtol=1e-6)
        mean, std = want["mean"], want["std"]
        np.testing.assert_allclose(
            events[f"{tag}/mean_plus_std"]["values"][-1], mean + std, rtol=1e-5, atol=1e-6
        )


def test_feature_map_image_size_and_range(logged_run):
    run, _ = logged_run
    events = read_events(run / "probe")
    width, height, png = events["conv1/feature_maps"]["values"][-1]
    image = tf.io.decode_png(png).numpy()
    # 4 channels of 8x8 -> 2x2 grid, tiles enlarged 7x (to >= 128 px), 1-px separators.
    assert image.shape == (113, 113, 3)
    assert (int(width), int(height)) == (113, 113)
    assert image.dtype == np.uint8
    separator = image[56, :, :]
    assert (separator == 255).all()
    # A palette PNG of the viridis colors: each channel spans the colormap from end to end.
    palette = colormap_palette("viridis")
    colors = {tuple(c) for c in image.reshape(-1, 3)}
    assert colors <= {tuple(c) for c in palette}
    assert tuple(palette[0]) in colors and tuple(palette[254]) in colors


def test_grayscale_tiles_are_normalized_per_channel(tiny_cnn, image_batch, tmp_path):
    probe = tbprobe.Probe(tiny_cnn, tmp_path, sample=image_batch, layers=["conv1"], cmap=None)
    probe.log(0)
    probe.close()
    _, _, png = read_events(tmp_path / "probe")["conv1/feature_maps"]["values"][0]
    image = tf.io.decode_png(png).numpy()[..., 0]
    conv1 = np.asarray(tiny_cnn.get_layer("conv1")(image_batch[:1]))[0]
    for channel in range(4):
        row, column = divmod(channel, 2)
        tile = image[row * 57 : row * 57 + 56, column * 57 : column * 57 + 56]
        if np.ptp(conv1[..., channel]) > 0:
            assert tile.min() == 0 and tile.max() == 254  # 255 marks separators
        else:
            assert (tile == 0).all()
        # The brightest pixel of the tile is where the channel is largest.
        r, c = np.unravel_index(np.argmax(conv1[..., channel]), (8, 8))
        assert tile[r * 7, c * 7] == tile.max()


def test_nonfinite_activations_are_counted_and_left_out(image_batch, tmp_path):
    # Non-finite values enter through a Rescaling layer (a plain multiply, no fused kernel) and
    # flow through pooling and a Dense layer without ReLU. What a CPU's kernels make of them
    # downstream (oneDNN maps NaN to 0 in fused Conv2D+bias+ReLU) is TensorFlow's business:
    # downstream layers are compared with the compiled probe model's own outputs.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(2.0, name="scale")(inputs)
    x = keras.layers.AveragePooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(x))
    sample = image_batch.copy()
    sample[0, 0, 0, 0] = np.nan
    sample[1, 2, 3, 1] = np.inf
    sample[1, 5, 5, 2] = -np.inf
    probe = tbprobe.Probe(model, tmp_path, sample=sample, buckets=12)
    assert probe.log(0)
    probe.close()
    events = read_events(tmp_path / "probe")

    scaled = 2.0 * sample
    finite = scaled[np.isfinite(scaled)]
    assert events["scale/nonfinite"]["values"][0] == pytest.approx(3 / sample.size)
    assert events["scale/activations"]["values"][0][:, 2].sum() == sample.size - 3
    assert events["scale/mean"]["values"][0] == pytest.approx(finite.mean(), rel=1e-5)
    assert events["scale/std"]["values"][0] == pytest.approx(finite.std(), rel=1e-5)

    compiled = tf.function(tbprobe.probe_model(model))(tf.constant(sample))
    for tag, x in compiled.items():
        want = layer_statistics_numpy(np.asarray(x), buckets=12)
        for name in ("nonfinite", "mean", "std", "sparsity"):
            got = events[f"{tag}/{name}"]["values"][0]
            np.testing.assert_allclose(got, want[name], rtol=1e-5, err_msg=f"{tag}/{name}")
            assert probe.stats()[tag][name] == pytest.approx(want[name], rel=1e-5)
        histogram = events[f"{tag}/activations"]["values"][0]
        np.testing.assert_array_equal(histogram[:, 2], want["histogram"][:, 2])
        assert np.isfinite(histogram).all()


def test_channels_first_outputs(tmp_path):
    inputs = keras.Input((3, 5, 5))
    padded = keras.layers.ZeroPadding2D(1, data_format="channels_first", name="pad")(inputs)
    model = keras.Model(inputs, padded)
    sample = np.ones((2, 3, 5, 5), "float32")
    sample[:, 1] = 0.0  # channel 1 is dead
    probe = tbprobe.Probe(model, tmp_path, sample=sample, cmap=None)
    assert probe.stats()["pad"]["dead_units"] == pytest.approx(1 / 3)
    probe.log(0)
    probe.close()
    _, _, png = read_events(tmp_path / "probe")["pad/feature_maps"]["values"][0]
    # 3 channels of 7x7 -> 2x2 grid (one blank tile) of 15 px, tiles enlarged 8x: 2 * 57 - 1.
    image = tf.io.decode_png(png).numpy()
    assert image.shape == (113, 113, 1)
    assert (image[57:, 57:] == 255).all()  # the blank tile


def test_mixed_precision_outputs(image_batch, tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(2, name="head", dtype="float32")(x))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    probe = tbprobe.Probe(model, tmp_path, sample=image_batch)
    assert [(o.tag, o.dtype) for o in probe.outputs] == [("conv", "float16"), ("head", "float32")]
    assert probe.log(0)
    conv = np.asarray(model.get_layer("conv")(image_batch)).astype("float32")
    assert probe.stats()["conv"]["mean"] == pytest.approx(conv.mean(), rel=1e-3)


def test_no_event_file_until_first_log_and_every(tiny_cnn, image_batch, tmp_path):
    run = tmp_path / "run"
    probe = tbprobe.Probe(tiny_cnn, run, sample=image_batch, every=3, layers=["dense"])
    assert list(run.rglob("*")) == [run / "probe"]  # the folder, checked at construction
    assert probe.log(1) is False
    assert list(run.rglob("*")) == [run / "probe"]
    assert probe.log(tf.Variable(3, dtype=tf.int64)) is True
    # Flushed at once: readable before close.
    assert read_events(run / "probe")["dense/mean"]["steps"] == [3]
    probe.log(6)
    assert probe._compute.experimental_get_tracing_count() == 1
    probe.close()
    # A closed probe appends to the run in a new event file.
    probe.log(9)
    probe.close()
    assert len(list((run / "probe").glob("events.out.tfevents.*"))) == 2
    assert read_events(run / "probe")["dense/mean"]["steps"] == [3, 6, 9]


def test_other_gating_cannot_silence_it(tiny_cnn, image_batch, tmp_path):
    probe = tbprobe.Probe(tiny_cnn, tmp_path, sample=image_batch, layers=["out"])
    with probe, tf.summary.record_if(False):
        assert probe.log(0)
    assert read_events(tmp_path / "probe")["out/std"]["steps"] == [0]


def test_dataset_sample_takes_first_batch_inputs(tiny_cnn, image_batch, tmp_path):
    dataset = tf.data.Dataset.from_tensor_slices((image_batch, np.zeros(4))).batch(3)
    probe = tbprobe.Probe(tiny_cnn, tmp_path, sample=dataset, layers=["out"])
    np.testing.assert_array_equal(probe.sample.numpy(), image_batch[:3])


def test_manifest_lists_outputs(logged_run):
    run, _ = logged_run
    manifest = read_events(run / "probe")["tbprobe/manifest"]["values"][0].item().decode()
    assert "| `conv1` | Conv2D | (4, 8, 8, 4) | float32 | `conv1/feature_maps` |" in manifest
    assert "| `flatten` | Flatten | (4, 96) | float32 | `flatten/heatmap` |" in manifest


def test_custom_scalars_layout(logged_run):
    from tensorboard.plugins.custom_scalar import layout_pb2

    run, _ = logged_run
    raw = read_events(run / "probe")["custom_scalars__config__"]["values"][0].item()
    layout = layout_pb2.Layout.FromString(raw)
    overview, margins = layout.category
    assert [chart.title for chart in overview.chart] == [
        "sparsity",
        "dead_units",
        "mean",
        "std",
        "nonfinite",
    ]
    assert overview.chart[1].multiline.tag == [".*/dead_units$"]
    assert margins.chart[0].margin.series[0].upper == "conv1/mean_plus_std"
    assert len(margins.chart) == 6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": 0}, r"every=0\. Expected a positive integer"),
        ({"every": -2}, r"every=-2"),
        ({"every": 1.5}, r"every=1\.5"),
        ({"buckets": 0}, r"buckets=0"),
        ({"max_channels": True}, r"max_channels=True"),
        ({"zero_tol": -1}, r"zero_tol=-1"),
        ({"cmap": "no-such-map"}, r"cmap='no-such-map'.*viridis"),
        ({"cmap": 3}, r"cmap=3"),
    ],
)
def test_bad_arguments(tiny_cnn, image_batch, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tbprobe.Probe(tiny_cnn, tmp_path / "run", sample=image_batch, **kwargs)
    assert not (tmp_path / "run").exists()


def test_bad_sample(tiny_cnn, image_batch, tmp_path):
    with pytest.raises(ValueError, match="Missing argument `sample`"):
        tbprobe.Probe(tiny_cnn, tmp_path, sample=None)
    with pytest.raises(ValueError, match=r"(?s)shape=\(2, 8, 8\).*shape=\(None, 8, 8, 3\)"):
        tbprobe.Probe(tiny_cnn, tmp_path, sample=np.zeros((2, 8, 8), "float32"))
    with pytest.raises(ValueError, match="at least one sample"):
        tbprobe.Probe(tiny_cnn, tmp_path, sample=image_batch[:0])


def test_bad_step(tiny_cnn, image_batch, tmp_path):
    probe = tbprobe.Probe(tiny_cnn, tmp_path, sample=image_batch, layers=["out"])
    for bad in (1.5, -1, "3", True):
        with pytest.raises(TypeError, match="Invalid step"):
            probe.log(bad)


def test_any_gfile_path(tiny_cnn, image_batch, tmp_path):
    """Logging goes through tf.io.gfile only: TensorFlow's in-memory ram:// filesystem works."""
    run = f"ram://tbprobe-test-{tmp_path.name}"
    with tbprobe.Probe(tiny_cnn, run, sample=image_batch, layers=["dense"]) as probe:
        assert probe.log(7)
    (event_file,) = tf.io.gfile.glob(f"{run}/probe/events.out.tfevents.*")
    local = tmp_path / "probe" / "events.out.tfevents.copy"
    local.parent.mkdir()
    local.write_bytes(tf.io.gfile.GFile(event_file, "rb").read())
    assert read_events(local.parent)["dense/mean"]["steps"] == [7]
