"""The TensorBoard child process of the launcher: its port, start, wait until it serves, stop.

TensorBoard starts in a session (process group) of its own, so that Ctrl-C in a terminal reaches
only the launcher, which then stops the whole group: TensorBoard and the data server it starts.
Its stdout and stderr go to a log file, read back for error messages.

Example::

    port = pick_port("localhost", None)
    command = tensorboard_command(logdir, "localhost", port, {}, "runs")
    process = start_in_new_session(command, log)
    wait_until_serving(process, page_urls("localhost", port)[1], log, timeout=120.0)
    terminate_group(process, timeout=10.0)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DEFAULT_PORT = 6006
PORT_SEARCH_SPAN = 100
RUNS_GRACE = 30.0  # seconds to wait for a run list once TensorBoard answers
LOG_TAIL_LINES = 20  # lines of TensorBoard's output quoted in error messages

_WILDCARD_HOSTS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}

# TensorBoard imports TensorFlow only to read files with tf.io.gfile, unless the module
# `tensorboard.compat.notf` exists: then `tensorboard.compat.tf` is its bundled stub, as in an
# install of TensorBoard without TensorFlow. The stub reads local paths (and s3:// with boto3,
# other URLs with fsspec), not TensorFlow's gs:// or hdfs://; the launcher takes local run folders
# only, and TensorBoard starts seconds sooner (README, "Comparing runs";
# scripts/bench_tensorboard_start.py measures it). This is the one internal TensorBoard switch
# used here, guarded by tests/test_tensorboard_process.py.
_STUB_TENSORFLOW = (
    "import sys, types; "
    "sys.modules['tensorboard.compat.notf'] = types.ModuleType('tensorboard.compat.notf'); "
)
_TENSORBOARD_MAIN = (
    "import sys; sys.argv[0] = 'tensorboard'; from tensorboard.main import run_main; run_main()"
)


class PortTaken(Exception):
    """TensorBoard could not bind its port (another program took it after `pick_port`)."""


def pick_port(host: str, port: int | None, start: int = DEFAULT_PORT) -> int:
    """Check `port`, or find the first free port from `start` on `host`.

    Raises:
        ValueError: `port` is not in 1-65535 or is busy, or `host` is not of this machine.
        RuntimeError: No port is free among `PORT_SEARCH_SPAN` from `start`.
    """
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"Invalid port. Received: {port!r}. Expected an integer 1-65535.")
        if _port_in_use(host, port):
            raise ValueError(busy_port_message(host, port))
        return port
    for candidate in range(start, min(start + PORT_SEARCH_SPAN, 65536)):
        if not _port_in_use(host, candidate):
            return candidate
    raise RuntimeError(f"No free port from {start} to {start + PORT_SEARCH_SPAN - 1} on {host}.")


def busy_port_message(host: str, port: int) -> str:
    """The error message for a `port` on `host` that is already in use."""
    return (
        f"Port {port} on {host} is already in use (another TensorBoard?). Pass a free port, or "
        f"none to take the first free one from {DEFAULT_PORT}."
    )


def page_urls(host: str, port: int) -> tuple[str, str]:
    """``(url to show, url to poll)`` of TensorBoard listening on `host`:`port`.

    A wildcard host (``0.0.0.0``) is shown as this machine's name and polled on loopback.
    """
    shown = socket.gethostname() if host in _WILDCARD_HOSTS else host
    return _url(shown, port), _url(_WILDCARD_HOSTS.get(host, host), port)


def tensorboard_command(
    logdir: Path,
    host: str,
    port: int,
    samples: Mapping[str, int],
    title: str,
    extra: Sequence[str] = (),
    *,
    with_tensorflow: bool = False,
) -> list[str]:
    """The command line that runs TensorBoard with this Python on `logdir`.

    Args:
        logdir: Folder given as ``--logdir``.
        host: Address to listen on.
        port: Port to listen on.
        samples: ``--samples_per_plugin`` as ``{plugin: steps kept}``.
        title: Window title of the page.
        extra: Further TensorBoard flags, given last so that they win.
        with_tensorflow: Let TensorBoard import TensorFlow for its file system layer, which
            then reads gs:// and hdfs:// too; by default it uses its bundled stub, which starts
            sooner and reads local paths.
    """
    program = _TENSORBOARD_MAIN if with_tensorflow else _STUB_TENSORFLOW + _TENSORBOARD_MAIN
    return [
        sys.executable,
        "-c",
        program,
        f"--logdir={logdir}",
        f"--host={host}",
        f"--port={port}",
        "--samples_per_plugin=" + ",".join(f"{k}={v}" for k, v in samples.items()),
        # TensorBoard's Python loader otherwise polls only the newest event file of a folder,
        # and a second fit() or a restarted job appends a new one (the data server reads all).
        "--reload_multifile=true",
        f"--window_title={title}",
        *extra,
    ]


def start_in_new_session(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start `command` in a new session (process group), its output appended to `log_path`."""
    with open(log_path, "ab") as log:
        if os.name == "posix":
            return subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            creationflags=subprocess.CREATE_NEW_PROCESS_GROUP,  # type: ignore[attr-defined]
        )


def wait_until_serving(
    process: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float
) -> None:
    """Return once TensorBoard at `url` lists a run (or answers without one for `RUNS_GRACE` s).

    Raises:
        PortTaken: TensorBoard exited because its port was taken.
        RuntimeError: TensorBoard exited, or did not answer within `timeout` seconds; the
            message ends with the last lines of its output.
    """
    start_time = time.monotonic()
    answered_at = None
    while time.monotonic() - start_time < timeout:
        code = process.poll()
        if code is not None:
            output = read_log(log_path)
            if "already in use" in output or "could not bind to port" in output:
                raise PortTaken
            tail = last_lines(output, LOG_TAIL_LINES)
            raise RuntimeError(f"TensorBoard exited with code {code} before serving {url}:\n{tail}")
        runs = _get_json(url + "data/runs")
        if runs:
            return
        if runs is not None:
            answered_at = answered_at or time.monotonic()
            if time.monotonic() - answered_at > RUNS_GRACE:
                return
        time.sleep(0.2)
    tail = read_log(log_path, LOG_TAIL_LINES)
    raise RuntimeError(f"TensorBoard did not answer at {url} within {timeout:g} s:\n{tail}")


def terminate_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the process group of `process`, SIGKILL whatever is left after `timeout` s."""
    if os.name != "posix":
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout)
    # The data server (a child of TensorBoard) and TensorBoard itself if stuck.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def read_log(path: Path, lines: int | None = None) -> str:
    """The text of the log at `path` (its last `lines` lines if given); "" if unreadable."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return text if lines is None else last_lines(text, lines)


def last_lines(text: str, lines: int) -> str:
    """The last `lines` lines of `text`."""
    return "\n".join(text.splitlines()[-lines:])


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _port_in_use(host: str, port: int) -> bool:
    """Whether TensorBoard would fail to listen on `port`: it binds as here, with SO_REUSEADDR."""
    with (
        contextlib.suppress(OSError),
        socket.create_connection((_WILDCARD_HOSTS.get(host, host), port), timeout=1.0),
    ):
        return True
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as werkzeug chooses
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return True
            raise ValueError(
                f"Cannot listen on host {host!r} (port {port}): {error}. Expected an address of "
                "this machine, e.g. localhost or 0.0.0.0."
            ) from None
    return False


def _get_json(url: str) -> Any:
    """GET `url` (never through a proxy) and parse JSON; None when it does not answer."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5.0) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None
