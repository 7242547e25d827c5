"""tbprobe.events: event files written with plain tf.summary, read back and compared exactly."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tbprobe.events import read_run
from tbprobe.runs import event_files

STEPS = (0, 10, 20)
SCALARS = {  # tag -> value at each of STEPS
    "conv1/sparsity": (0.25, 0.5, 0.75),
    "conv1/dead_units": (0.0, 0.25, 0.5),
    "encoder/conv1/mean": (1.5, -2.0, 0.125),
    "lstm/0/std": (0.1, 0.2, 0.3),
}


def histogram_rows(step: int) -> np.ndarray:
    edges = np.linspace(-1.0, 1.0 + step / 10, 5)
    counts = np.arange(4, dtype=np.float64) + step
    return np.stack([edges[:-1], edges[1:], counts], axis=1)


def write_probe(run: Path, steps=STEPS, scalars=SCALARS, histograms=("conv1", "encoder/conv1")):
    """Write `scalars` and histograms of `histogram_rows` at `steps` into `run/probe/`, plus an
    image and the manifest, in the order: per step, per tag. Returns the event file written."""
    import tensorflow as tf
    from tensorboard.plugins.histogram import metadata

    writer = tf.summary.create_file_writer(str(run / "probe"))
    with writer.as_default():
        tf.summary.text("tbprobe/manifest", f"layers of {run.name}", step=steps[0])
        for i, step in enumerate(steps):
            tf.summary.image("conv1/feature_maps", np.ones((1, 4, 4, 1), "float32"), step=step)
            for layer in histograms:
                tf.summary.write(
                    f"{layer}/activations",
                    tf.constant(histogram_rows(step)),
                    step=step,
                    metadata=metadata.create_summary_metadata("", ""),
                )
            for tag, values in scalars.items():
                tf.summary.scalar(tag, values[i], step=step)
    writer.close()
    return event_files(run / "probe")[-1]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """One run, `runs/full`, written once for the module; copy it before changing it."""
    run = tmp_path_factory.mktemp("runs") / "full"
    write_probe(run)
    return run


def expected_series(tag: str, steps=STEPS) -> tuple[np.ndarray, np.ndarray]:
    values = [SCALARS[tag][STEPS.index(s)] for s in steps]
    # tf.summary.scalar stores float32.
    return np.array(steps, np.int64), np.array(values, np.float32).astype(np.float64)


def test_read_run_returns_exact_steps_values_and_last_histograms(written):
    run = read_run(written)

    assert run.name == "full" and run.path == written
    assert run.layers == ["conv1", "encoder/conv1", "lstm/0"]
    assert set(run.scalars["conv1"]) == {"sparsity", "dead_units"}
    for tag in SCALARS:
        layer, _, metric = tag.rpartition("/")
        steps, values = run.scalars[layer][metric]
        assert steps.dtype == np.int64 and values.dtype == np.float64
        np.testing.assert_array_equal(steps, expected_series(tag)[0])
        np.testing.assert_array_equal(values, expected_series(tag)[1])
    assert set(run.histograms) == {"conv1", "encoder/conv1"}
    step, rows = run.histograms["encoder/conv1"]
    assert step == 20
    np.testing.assert_array_equal(rows, histogram_rows(20))
    assert run.manifest == "layers of full"
    assert run.problems == ()
    assert not run.empty


def test_read_run_accepts_the_probe_folder_itself(written):
    run = read_run(written / "probe", name="given")
    assert (run.name, run.path) == ("given", written)
    assert run.layers == ["conv1", "encoder/conv1", "lstm/0"]


def test_several_event_files_are_read_in_order_and_the_later_value_wins(written, tmp_path):
    run_dir = shutil.copytree(written, tmp_path / "resumed")
    # A second writer (a second fit call) rewrites step 20 and continues to step 30.
    write_probe(run_dir, steps=(20, 30), scalars={"conv1/sparsity": (0.0, 1.0)}, histograms=())

    run = read_run(run_dir)

    assert len(event_files(run_dir / "probe")) == 2
    steps, values = run.scalars["conv1"]["sparsity"]
    np.testing.assert_array_equal(steps, [0, 10, 20, 30])
    np.testing.assert_array_equal(values, [0.25, 0.5, 0.0, 1.0])
    np.testing.assert_array_equal(run.scalars["lstm/0"]["std"][0], [0, 10, 20])
    assert run.histograms["conv1"][0] == 20


@pytest.mark.parametrize("chop", [3, 40])
def test_truncated_last_record_is_dropped_and_reported(written, tmp_path, chop):
    run_dir = shutil.copytree(written, tmp_path / "crashed")
    file = event_files(run_dir / "probe")[0]
    data = file.read_bytes()
    file.write_bytes(data[:-chop])

    run = read_run(run_dir)

    # The last record written is lstm/0/std at step 20; everything before it is intact.
    np.testing.assert_array_equal(run.scalars["lstm/0"]["std"][0], [0, 10])
    for tag in ("conv1/sparsity", "conv1/dead_units", "encoder/conv1/mean"):
        layer, _, metric = tag.rpartition("/")
        np.testing.assert_array_equal(run.scalars[layer][metric][1], expected_series(tag)[1])
    assert run.histograms["conv1"][0] == 20
    assert len(run.problems) == 1 and "truncated" in run.problems[0]
    assert file.name in run.problems[0]


def test_corrupt_record_is_skipped_and_reported(written, tmp_path):
    run_dir = shutil.copytree(written, tmp_path / "corrupt")
    file = event_files(run_dir / "probe")[0]
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF  # the payload checksum of the last record (lstm/0/std at step 20)
    file.write_bytes(bytes(data))

    run = read_run(run_dir)

    np.testing.assert_array_equal(run.scalars["lstm/0"]["std"][0], [0, 10])
    assert len(run.problems) == 1 and "corrupt record" in run.problems[0]


def test_event_file_without_summaries_gives_an_empty_run(tmp_path):
    import tensorflow as tf

    tf.summary.create_file_writer(str(tmp_path / "started" / "probe")).close()

    run = read_run(tmp_path / "started")

    assert run.empty and run.layers == [] and run.problems == ()


def test_folder_without_runs_raises_with_the_path(tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(
        ValueError, match=r"No tbprobe data at or below '.*empty'.*Found there: train"
    ):
        read_run(tmp_path / "empty")


def test_parent_passed_to_read_run_raises(written, tmp_path):
    shutil.copytree(written, tmp_path / "one" / "x")
    with pytest.raises(ValueError, match=r"is not a run folder.*1 run\(s\) below it"):
        read_run(tmp_path / "one")


def test_reading_imports_neither_tensorflow_nor_matplotlib(written):
    code = (
        "import sys; from tbprobe.events import read_run; "
        f"run = read_run({str(written)!r}); assert run.layers, run; "
        "heavy = {'tensorflow', 'keras', 'matplotlib'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# tbprobe.events borrows three functions from TensorBoard's internals; each test below fails with
# a message naming the borrowed function when a TensorBoard release changes it.
TENSORBOARD_CHANGED = "TensorBoard changed {}, which tbprobe.events borrows: "


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_masked_crc32c_is_the_tfrecord_checksum():
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    assert crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C
    for data in (b"", b"123456789", bytes(range(256)) * 3, np.float64(0.25).tobytes()):
        crc = crc32c(data)
        masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF  # TFRecord's mask
        assert masked_crc32c(data) == masked, (
            TENSORBOARD_CHANGED.format("pywrap_tensorflow.masked_crc32c")
            + f"it no longer returns TFRecord's masked CRC-32C of {data[:16]!r}"
        )


def test_migrate_value_turns_legacy_values_into_tensors_make_ndarray_reads():
    from tensorboard import data_compat
    from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary
    from tensorboard.util.tensor_util import make_ndarray

    message = TENSORBOARD_CHANGED.format("data_compat.migrate_value or tensor_util.make_ndarray")
    scalar = data_compat.migrate_value(Summary.Value(tag="conv1/sparsity", simple_value=0.25))
    assert scalar.metadata.plugin_data.plugin_name == "scalars", message + str(scalar)
    array = make_ndarray(scalar.tensor)
    assert array.shape == () and float(array) == 0.25, message + repr(array)

    histo = HistogramProto(
        min=-1.0, max=3.0, bucket_limit=[0.0, 1.0, 2.0, 5.0], bucket=[1, 0, 2, 4]
    )
    migrated = data_compat.migrate_value(Summary.Value(tag="conv1/activations", histo=histo))
    assert migrated.metadata.plugin_data.plugin_name == "histograms", message + str(migrated)
    rows = make_ndarray(migrated.tensor)
    # Left edges start at min, right edges end at max, one row per bucket.
    expected = [[-1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 2.0, 2.0], [2.0, 3.0, 4.0]]
    np.testing.assert_array_equal(rows, expected, err_msg=message)
