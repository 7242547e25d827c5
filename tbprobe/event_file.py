"""The run's event folder and event file: created and checked at construction, every write
verified, so that a `log_dir` that cannot hold the events fails before training starts and a
write that does not reach the disk is an error, never a silently missing step.

`check_writable(log_dir)` creates `<log_dir>/probe` with `tf.io.gfile.makedirs`: permission bits
alone do not tell (under `/proc`, root sees write permission and creating anything fails). The
folder stays empty until the first log: `EventFile` creates its file at its first write.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from tbprobe.summaries import SummaryBuilder
from tbprobe.tags import PROBE_DIR


def check_writable(log_dir: str) -> str:
    """Create `<log_dir>/probe` now, failing early when `log_dir` cannot hold it.

    Args:
        log_dir: the run directory, any path `tf.io.gfile` accepts.

    Returns:
        The event folder `<log_dir>/probe`, created (empty).

    Raises:
        ValueError: the folder cannot be created (a part of the path is a file, no permission,
            a file system that refuses it), or a local folder is not writable.

    Example:
        >>> check_writable("runs/a")
        'runs/a/probe'
    """
    if not log_dir:
        raise ValueError(
            "Invalid value for argument `log_dir`. Received: log_dir=''. Expected the path of "
            "a run directory."
        )
    probe_dir = tf.io.gfile.join(log_dir, PROBE_DIR)
    try:
        tf.io.gfile.makedirs(probe_dir)
    except (tf.errors.OpError, OSError) as error:
        raise ValueError(
            f"Invalid value for argument `log_dir`. Received: log_dir={log_dir!r}. Could not "
            f"create {probe_dir!r}: {type(error).__name__}: {error}. Expected a directory "
            "path you can write to."
        ) from error
    if "://" not in probe_dir and not os.access(probe_dir, os.W_OK | os.X_OK):
        raise ValueError(
            f"Invalid value for argument `log_dir`. Received: log_dir={log_dir!r}. No write "
            f"permission on {probe_dir!r}. Expected a directory path you can write to."
        )
    return probe_dir


class ProbeWriteError(OSError):
    """A log step could not be written to the event file (disk full, file system gone)."""


class EventFile:
    """The probe's event file in `folder`: opened at the first write, every flush verified.

    TensorFlow's summary writer does not always report a failed write: a record larger than the
    file's buffer is written straight through, and when that write falls short (disk full), the
    flush that follows finds nothing to report. So after each flush, a local event file must
    have grown by the exact size of the records written; otherwise, or when TensorFlow raises,
    `ProbeWriteError` names the folder and the cause. The steps flushed before stay readable (a
    truncated last record ends the file), and the next write starts a new event file.

    Args:
        folder: where the event file goes, any path `tf.io.gfile` accepts. Sizes are verified
            for local paths, where they are visible at once.

    Example:
        >>> events = EventFile("runs/a/probe")
        >>> events.write(3, builder)
        >>> events.flush(step=3)  # raises ProbeWriteError when step 3 is not on disk
    """

    def __init__(self, folder: str):
        self.folder = folder
        self._writer: Any = None
        self._path: str | None = None  # the event file, where its size can be checked
        self._size = 0  # bytes on disk at the last flush
        self._pending = 0  # bytes written since

    def write(self, step: int, *summaries: SummaryBuilder) -> None:
        """Write the values of `summaries` as one event at `step` (buffered until `flush`).

        Raises:
            ProbeWriteError: TensorFlow could not create or write the event file.
        """
        try:
            if self._writer is None:
                self._open()
            with _default_writer_kept():
                summaries[0].write(self._writer, step, *summaries[1:])
        except tf.errors.OpError as error:
            self._fail(step, _describe(error))
        self._pending += record_size(sum(s.summary.ByteSize() for s in summaries), step)

    def flush(self, step: int) -> None:
        """Flush the events written since the last flush, and check that they reached the file.

        Raises:
            ProbeWriteError: the flush failed, or the file did not grow by what was written.
        """
        try:
            self._writer.flush()
        except tf.errors.OpError as error:
            self._fail(step, _describe(error))
        if self._path is not None:
            size = os.path.getsize(self._path)
            if size - self._size < self._pending:
                self._fail(
                    step,
                    f"{os.path.basename(self._path)} grew by {size - self._size} bytes instead "
                    f"of {self._pending} (is the disk full?)",
                )
            self._size = size
        self._pending = 0

    def close(self) -> None:
        """Flush and close the event file; a later `write` starts a new one."""
        writer, self._writer, self._path, self._size, self._pending = self._writer, None, None, 0, 0
        if writer is not None:
            writer.close()

    def _open(self) -> None:
        pattern = tf.io.gfile.join(self.folder, "*tfevents*")
        before = set(tf.io.gfile.glob(pattern))
        self._writer = tf.summary.create_file_writer(self.folder)
        self._writer.flush()  # the file-version record, so that sizes count from here
        if "://" in self.folder:
            return
        # The writer does not tell its file's name: the file that appeared, named with our pid.
        pid = f".{os.getpid()}."
        new = [
            path
            for path in set(tf.io.gfile.glob(pattern)) - before
            if pid in os.path.basename(path)
        ]
        if len(new) == 1:
            self._path = new[0]
            self._size = os.path.getsize(self._path)

    def _fail(self, step: int, cause: str) -> None:
        # The writer is unusable after a failed write: drop it, so that a later log (once there
        # is room again) opens a new file instead of appending behind a truncated record.
        with contextlib.suppress(tf.errors.OpError):
            self.close()
        raise ProbeWriteError(
            f"Could not write log step {step} to {self.folder!r}: {cause}. The steps logged "
            "before it are on disk; free space or pick another log_dir."
        )


@contextlib.contextmanager
def _default_writer_kept() -> Iterator[None]:
    """Restore TensorFlow's default summary writer and step if the block raises.

    `SummaryWriter.as_default()` flushes on exit BEFORE it restores the previous default writer
    (TensorFlow 2.21, `_SummaryContextManager.__exit__`): when that flush fails (disk full), our
    broken writer stays the process's default, and every later `tf.summary` call, Keras's
    TensorBoard callback's included, fails on it. There is no public getter for the default
    writer, hence the private `_summary_state`, used here only.
    """
    from tensorflow.python.ops import summary_ops_v2

    state = summary_ops_v2._summary_state
    writer, step = state.writer, state.step
    try:
        yield
    except BaseException:
        state.writer, state.step = writer, step
        raise


def record_size(length: int, step: int) -> int:
    """Bytes of the TFRecord holding `Event(wall_time, step, summary)` in an event file, for a
    serialized `summary` of `length` bytes.

    A record is its length (8 bytes), a CRC (4), the serialized Event and a CRC (4). The Event
    holds `wall_time` (a double, field 1: 9 bytes, never 0), `step` (field 2, a varint, left
    out when 0) and `summary` (field 5: tag, varint length, bytes).
    """
    event = 9 + (1 + _varint_size(step) if step else 0) + 1 + _varint_size(length) + length
    return 8 + 4 + event + 4


def _describe(error: tf.errors.OpError) -> str:
    # Messages read "{{function_node __wrapped__FlushSummaryWriter_device_...}} <path>; <cause>".
    return f"{type(error).__name__}: {re.sub(r'[{][{].*?[}][}]', '', error.message).strip()}"


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)
