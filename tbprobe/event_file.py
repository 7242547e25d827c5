"""The run's event folder: created and checked at construction, so that a `log_dir` that
cannot hold it fails before training starts instead of at the first log.

`check_writable(log_dir)` creates `<log_dir>/probe` with `tf.io.gfile.makedirs`: permission bits
alone do not tell (under `/proc`, root sees write permission and creating anything fails). The
folder stays empty until the first log: event files are created lazily.
"""

from __future__ import annotations

import os

import tensorflow as tf

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
