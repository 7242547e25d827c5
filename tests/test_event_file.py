"""The event folder: created at construction, and a log_dir that cannot hold it fails there."""

from __future__ import annotations

import os

import numpy as np
import pytest

import tbprobe
from tbprobe.event_file import check_writable


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
