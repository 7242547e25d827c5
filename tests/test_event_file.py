"""The event folder and file: a log_dir that cannot hold them fails at construction, and a
write that does not reach the disk (a real full file system) is an error, losing nothing."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time

import numpy as np
import pytest
from tensorboard.compat.proto import event_pb2, summary_pb2

import tbprobe
from tbprobe.event_file import ProbeWriteError, check_writable, record_size
from tbprobe.events import read_run

TINY = 64 * 1024


@pytest.fixture(params=["tmpfs", "file size limit"])
def tiny_disk(request, tmp_path):
    """A folder that holds at most 64 KiB per file: a 64 KiB tmpfs where mounting is permitted
    (root), and always a file size limit (RLIMIT_FSIZE: writes past it fail with EFBIG)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if request.param == "tmpfs":
        mount = ["mount", "-t", "tmpfs", "-o", f"size={TINY}", "tmpfs", str(folder)]
        result = subprocess.run(mount, capture_output=True, text=True, check=False)
        if result.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        try:
            yield folder
        finally:
            subprocess.run(["umount", str(folder)], check=True)
        return
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills us
    resource.setrlimit(resource.RLIMIT_FSIZE, (TINY, limits[1]))
    try:
        yield folder
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)


def test_creates_the_empty_probe_folder(tmp_path):
    run = tmp_path / "runs" / "a"
    assert check_writable(str(run)) == str(run / "probe")
    assert (run / "probe").is_dir()
    assert not list((run / "probe").iterdir())
    # Idempotent: an existing run folder is fine.
    assert check_writable(str(run)) == str(run / "probe")


def test_path_under_a_file(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    run = blocker / "run"
    with pytest.raises(ValueError, match=r"Invalid value for argument `log_dir`") as info:
        check_writable(str(run))
    assert f"log_dir={str(run)!r}" in str(info.value)
    assert f"{blocker!s} is not a directory" in str(info.value)
    assert blocker.read_text() == "not a directory"


@pytest.mark.skipif(os.geteuid() != 0, reason="root sees write permission on /proc; others not")
def test_permission_bits_that_lie(tiny_cnn, image_batch):
    # Root passes os.access on /proc, yet nothing can be created there.
    assert os.access("/proc", os.W_OK | os.X_OK)
    run = "/proc/tbprobe_test"
    message = r"(?s)log_dir='/proc/tbprobe_test'.*'/proc/tbprobe_test/probe'.*NotFoundError"
    with pytest.raises(ValueError, match=message):
        tbprobe.Probe(tiny_cnn, run, sample=image_batch)
    with pytest.raises(ValueError, match=message):
        tbprobe.ProbeCallback(run, sample=image_batch)
    assert not os.path.exists(run)


def test_empty_path():
    with pytest.raises(ValueError, match=r"Received: log_dir=''"):
        check_writable("")


def test_callback_checks_at_construction(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"file\.txt is not a directory"):
        tbprobe.ProbeCallback(blocker / "run", sample=np.zeros((2, 8, 8, 3), "float32"))


@pytest.mark.parametrize("images", [True, False])
def test_full_disk_is_an_error_and_nothing_logged_is_lost(tiny_disk, tiny_cnn, image_batch, images):
    # With images, each step is one record larger than the C library's buffer, written straight
    # through: TensorFlow reports nothing when it falls short, the size check does. Without, the
    # records wait in the buffer and TensorFlow's flush raises.
    run = tiny_disk / "run"
    probe = tbprobe.Probe(tiny_cnn, run, sample=image_batch, images=images)
    failed = None
    for step in range(TINY // 1000):  # a step writes more than 1000 bytes
        try:
            assert probe.log(step)
        except ProbeWriteError as error:
            failed, message = step, str(error)
            break
    assert failed is not None and failed > 0
    assert f"Could not write log step {failed} to {str(run / 'probe')!r}" in message
    logged = read_run(run)
    assert logged.scalars["conv1"]["mean"][0].tolist() == list(range(failed))
    assert logged.manifest is not None and "`conv1`" in logged.manifest
    probe.close()


def test_a_later_log_starts_a_new_event_file(tiny_cnn, image_batch, tmp_path):
    run = tmp_path / "run"
    probe = tbprobe.Probe(tiny_cnn, run, sample=image_batch, layers=["dense"])
    assert probe.log(0)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    (event_file,) = (run / "probe").iterdir()
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (event_file.stat().st_size, limits[1]))
    try:
        with pytest.raises(ProbeWriteError, match=r"log step 1 .*(OutOfRange|grew by)"):
            probe.log(1)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    # The failed writer did not stay TensorFlow's default: a plain tf.summary call with no
    # writer of its own records nothing (TensorFlow's as_default() flushes before it restores).
    import tensorflow as tf

    assert not tf.summary.scalar("unrelated", 1.0, step=0)
    assert probe.log(2)  # room again
    probe.close()
    assert len(list((run / "probe").iterdir())) == 2
    assert read_run(run).scalars["dense"]["mean"][0].tolist() == [0, 2]


@pytest.mark.parametrize("step", [0, 1, 127, 128, 300, 2**40])
def test_record_size_is_a_serialized_event_in_its_frame(step):
    summary = summary_pb2.Summary()
    summary.value.add(tag="conv1/mean", simple_value=0.5)
    summary.value.add(tag="conv1/png").tensor.string_val.append(b"x" * 300)
    event = event_pb2.Event(wall_time=time.time(), step=step, summary=summary)
    # uint64 length, uint32 CRC, payload, uint32 CRC
    assert record_size(summary.ByteSize(), step) == 8 + 4 + len(event.SerializeToString()) + 4
