"""Start TensorBoard on tbprobe runs: one run, every run below a folder, or named runs side by side.

A *run* is a directory written by tbprobe: it holds ``probe/`` (tbprobe's event files) and
possibly Keras's ``train/`` and ``validation/``. How arguments become TensorBoard run names:

=================================  ==============================================
arguments                          runs shown by TensorBoard
=================================  ==============================================
``runs/baseline`` (one run)        ``baseline/probe``, ``baseline/train``
``runs/`` (a folder of runs)       ``baseline/probe``, ``high_lr/probe``, ...
``base=runs/a lr=runs/b``          ``base/probe``, ``lr/probe``
``runs/a runs/b`` (unnamed)        ``a/probe``, ``b/probe`` (folder names)
=================================  ==============================================

TensorBoard discourages ``--logdir_spec``, so names come from a temporary folder of symlinks
(``name -> absolute run path``) given as ``--logdir`` and removed when TensorBoard stops. Both of
TensorBoard's loaders follow them (checked with TensorBoard 2.21 and tensorboard-data-server
0.7.2: the Rust data server of ``--load_fast`` and the Python loader). A folder of runs given
alone is passed as it is, so runs that appear in it later are shown too.

TensorBoard runs in a session of its own: Ctrl-C in a terminal reaches only the launcher, which
then stops TensorBoard's whole process group (TensorBoard and its data server).

Example::

    with tbprobe.launch({"baseline": "runs/a", "high_lr": "runs/b"}) as tensorboard:
        print(tensorboard.url)
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.request
import webbrowser
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 6006
PORT_SEARCH_SPAN = 100
# TensorBoard keeps 10 image steps per tag by default, too few to follow feature maps through a
# training. `images=0` means "keep all" to TensorBoard, but the project's design notes found the
# image dashboard empty with it, so a count is used. Histograms (500) and scalars (1000) keep
# TensorBoard's defaults.
DEFAULT_SAMPLES_PER_PLUGIN = {"images": 100}
DEFAULT_TIMEOUT = 120.0
RUN_FOLDERS = ("probe", "train", "validation")

_EVENT_FILE_MARKER = "tfevents"  # TensorBoard's own test: "tfevents" in the file name
_WILDCARD_HOSTS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}
_RUNS_GRACE = 30.0  # seconds to wait for a run list once TensorBoard answers
_PORT_ATTEMPTS = 3

# TensorBoard imports TensorFlow (about 10 s) only to read files with tf.io.gfile, unless the
# module `tensorboard.compat.notf` exists: then it uses its bundled stub, as an install of
# TensorBoard without TensorFlow does. Our runs are local paths, which the stub reads. This is the
# one internal TensorBoard switch used here; TensorBoard itself is unchanged.
_TENSORBOARD_MAIN = (
    "import sys, types; "
    "sys.modules['tensorboard.compat.notf'] = types.ModuleType('tensorboard.compat.notf'); "
    "sys.argv[0] = 'tensorboard'; "
    "from tensorboard.main import run_main; run_main()"
)


class TensorBoardHandle:
    """A TensorBoard process started by `launch`; stop it with `stop()` or a `with` block.

    Attributes:
        url: Address of the TensorBoard page, e.g. ``http://localhost:6006/``.
        host: Address TensorBoard listens on.
        port: Port TensorBoard listens on.
        logdir: The folder given to TensorBoard as ``--logdir`` (the symlink folder, or a folder
            of runs given alone).
        links: Run name -> absolute run directory, one symlink each in `logdir`; empty when a
            folder of runs is served as it is.
        process: The TensorBoard process (leader of its own process group on POSIX).
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        *,
        url: str,
        host: str,
        port: int,
        logdir: Path,
        links: dict[str, Path],
        workdir: Path,
    ) -> None:
        self.process = process
        self.url = url
        self.host = host
        self.port = port
        self.logdir = logdir
        self.links = links
        self._workdir = workdir
        self._final_output: str | None = None
        self._lock = threading.Lock()
        atexit.register(self.stop)

    @property
    def pid(self) -> int:
        """Process id of TensorBoard (also its process group id on POSIX)."""
        return self.process.pid

    @property
    def running(self) -> bool:
        """Whether the TensorBoard process is still alive."""
        return self.process.poll() is None

    def output(self, lines: int | None = None) -> str:
        """TensorBoard's stdout and stderr so far (the last `lines` lines if given)."""
        text = self._final_output
        if text is None:
            text = _read_text(self._workdir / "tensorboard.log")
        return text if lines is None else "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Stop TensorBoard and its data server, remove the symlink folder. Safe to call twice.

        Args:
            timeout: Seconds to wait after SIGTERM before the process group is killed.
        """
        with self._lock:
            if self._final_output is not None:
                return
            # Interrupted here (a second Ctrl-C), the atexit safeguard stays registered.
            _terminate_group(self.process, timeout)
            self._final_output = self.output()
            shutil.rmtree(self._workdir, ignore_errors=True)
            atexit.unregister(self.stop)

    def __enter__(self) -> TensorBoardHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"TensorBoardHandle(url={self.url!r}, pid={self.pid}, {state})"


def launch(
    *runs: str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]],
    port: int | None = None,
    host: str = DEFAULT_HOST,
    open_browser: bool = False,
    samples_per_plugin: Mapping[str, int] | str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    tensorboard_args: Sequence[str] = (),
) -> TensorBoardHandle:
    """Start TensorBoard on tbprobe runs and return once it serves them.

    Args:
        *runs: Each a run directory (``"runs/baseline"``, shown under its folder name), a folder
            of runs (``"runs/"``), a ``"NAME=PATH"`` string, or a mapping ``{name: path}``.
            Several are shown side by side. A folder of runs given alone is served as it is.
        port: Port to serve on; None takes `DEFAULT_PORT` or the next free one. A port given
            here that is busy is an error.
        host: Address to listen on; ``"0.0.0.0"`` serves to the network.
        open_browser: Open the page with `webbrowser` once TensorBoard answers.
        samples_per_plugin: Steps kept per tag, ``{"images": 500}`` or ``"images=500"``, merged
            over `DEFAULT_SAMPLES_PER_PLUGIN`.
        timeout: Seconds to wait for TensorBoard to answer over HTTP.
        tensorboard_args: Further TensorBoard flags, e.g. ``["--reload_interval=1"]``.

    Returns:
        A `TensorBoardHandle`; TensorBoard runs until `stop()`, the end of a `with` block, or the
        exit of this Python process.

    Raises:
        ValueError: A path does not exist or holds no event files, a name is empty, contains
            '/' or is given twice, `samples_per_plugin` is malformed, or `port` is busy.
        RuntimeError: TensorBoard exited or did not answer within `timeout`; the message ends
            with TensorBoard's output.

    Example:
        >>> tensorboard = tbprobe.launch("baseline=runs/a", "high_lr=runs/b")  # doctest: +SKIP
        >>> tensorboard.url  # doctest: +SKIP
        'http://localhost:6006/'
        >>> tensorboard.stop()  # doctest: +SKIP
    """
    layout = resolve_runs(*runs)
    samples = {**DEFAULT_SAMPLES_PER_PLUGIN, **parse_samples_per_plugin(samples_per_plugin)}
    chosen = _pick_port(host, port)
    workdir = Path(tempfile.mkdtemp(prefix="tbprobe-launch-"))
    try:
        links = layout if isinstance(layout, dict) else {}
        logdir = layout if isinstance(layout, Path) else _link_runs(workdir / "logdir", layout)
        title = "tbprobe: " + (", ".join(links) or logdir.name)
        for attempt in range(_PORT_ATTEMPTS):
            flags = _tensorboard_flags(logdir, host, chosen, samples, title)
            process = _spawn([*flags, *tensorboard_args], workdir / "tensorboard.log")
            url = _url(socket.gethostname() if host in _WILDCARD_HOSTS else host, chosen)
            poll_url = _url(_WILDCARD_HOSTS.get(host, host), chosen)
            try:
                _wait_until_serving(process, poll_url, workdir / "tensorboard.log", timeout)
                break
            except _PortTaken:
                # Another program bound the port between our check and TensorBoard's bind.
                _terminate_group(process, timeout=5.0)
                if port is not None or attempt == _PORT_ATTEMPTS - 1:
                    raise ValueError(_busy_port_message(host, chosen)) from None
                chosen = _pick_port(host, None, start=chosen + 1)
            except BaseException:
                _terminate_group(process, timeout=5.0)
                raise
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    handle = TensorBoardHandle(
        process, url=url, host=host, port=chosen, logdir=logdir, links=links, workdir=workdir
    )
    if open_browser:
        webbrowser.open(handle.url)
    return handle


def resolve_runs(
    *runs: str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]],
) -> Path | dict[str, Path]:
    """Check run arguments (see `launch`) and decide what TensorBoard is pointed at.

    Returns:
        The absolute folder to use as ``--logdir`` when a single folder of runs is given without
        a name, else a dict run name -> absolute run directory, to be linked under those names.

    Raises:
        ValueError: As described in `launch`.
        TypeError: An argument is neither a path, a string nor a mapping.
    """
    entries: list[tuple[str | None, str, str]] = []  # (name or None, path, argument as given)
    for item in runs:
        if isinstance(item, Mapping):
            entries += [(_check_name_type(n), os.fspath(p), f"{n}={p}") for n, p in item.items()]
        elif isinstance(item, (str, os.PathLike)):
            entries.append(_split_run_argument(os.fspath(item)))
        else:
            raise TypeError(
                f"Invalid run argument. Received: {item!r} of type {type(item).__name__}. "
                "Expected a path, a 'NAME=PATH' string or a mapping {name: path}."
            )
    if not entries:
        raise ValueError("No run given. Pass a run directory, a folder of runs or NAME=PATH.")
    paths = [_check_run_path(path, argument) for _, path, argument in entries]
    for name, _, argument in entries:
        if name is not None:
            _check_name(name, argument)
    if len(entries) == 1 and entries[0][0] is None and not _is_run(paths[0]):
        return paths[0]
    links: dict[str, Path] = {}
    for (name, _, argument), path in zip(entries, paths, strict=True):
        name = path.name if name is None else name
        if name in links:
            raise ValueError(
                f"Run name {name!r} is given twice (again by {argument!r}). Expected distinct "
                f"names; name the runs explicitly, e.g. {name}_1=... {name}_2=..."
            )
        links[name] = path
    return links


def parse_samples_per_plugin(value: Mapping[str, int] | str | None) -> dict[str, int]:
    """Parse ``"images=100,histograms=500"`` (or check a mapping) into ``{plugin: count}``.

    Raises:
        ValueError: An entry is not ``plugin=count`` with a non-negative integer count.
    """
    if value is None:
        return {}
    error = ValueError(
        f"Invalid samples_per_plugin. Received: {value!r}. Expected plugin=count pairs with "
        "non-negative integer counts, e.g. 'images=100,histograms=500'."
    )
    if isinstance(value, str):
        tokens = [token.partition("=") for token in value.split(",") if token.strip()]
        if not all(sep for _, sep, _ in tokens):
            raise error
        items = [(plugin.strip(), count.strip()) for plugin, _, count in tokens]
    else:
        items = list(value.items())
    parsed: dict[str, int] = {}
    for plugin, count in items:
        if isinstance(count, str) and count.isdigit():
            count = int(count)
        if not (isinstance(plugin, str) and plugin) or type(count) is not int or count < 0:
            raise error
        parsed[plugin] = count
    return parsed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of `tbprobe launch` to `parser`."""
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="a run directory (runs/baseline, shown as 'baseline'), a folder of runs (runs/), "
        "or NAME=PATH to show a run under NAME; several are shown side by side",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port to serve on (default: {DEFAULT_PORT} or the next free one)",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to listen on (default: %(default)s)"
    )
    parser.add_argument("--open", action="store_true", help="open the page in a web browser")
    parser.add_argument(
        "--samples-per-plugin",
        metavar="PLUGIN=N,...",
        help="steps kept per tag, merged over "
        + ",".join(f"{k}={v}" for k, v in DEFAULT_SAMPLES_PER_PLUGIN.items())
        + " (TensorBoard keeps 10 images, 500 histograms, 1000 scalars)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds to wait for TensorBoard to start (default: %(default)s)",
    )
    parser.add_argument(
        "--tensorboard-args",
        metavar="FLAGS",
        default="",
        help="further TensorBoard flags, e.g. --tensorboard-args='--reload_interval=1'",
    )


def run(args: argparse.Namespace) -> int:
    """Run `tbprobe launch`: serve until Ctrl-C or SIGTERM; return the exit code."""
    restore_signals = _stop_signals_raise_keyboard_interrupt()
    try:
        handle = launch(
            *args.runs,
            port=args.port,
            host=args.host,
            open_browser=args.open,
            samples_per_plugin=args.samples_per_plugin,
            timeout=args.timeout,
            tensorboard_args=shlex.split(args.tensorboard_args),
        )
        with handle:
            print(f"TensorBoard at {handle.url} (pid {handle.pid}); Ctrl-C stops it", flush=True)
            for name, path in handle.links.items():
                print(f"  {name}: {path}", flush=True)
            print(f"  logdir: {handle.logdir}", flush=True)
            code = handle.process.wait()
        print(
            f"tbprobe launch: TensorBoard exited with code {code}:\n{handle.output(lines=20)}",
            file=sys.stderr,
        )
        return 1
    except ValueError as error:
        print(f"tbprobe launch: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"tbprobe launch: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tbprobe launch: TensorBoard stopped", file=sys.stderr, flush=True)
        return 0
    finally:
        restore_signals()


class _PortTaken(Exception):
    """TensorBoard could not bind its port."""


def _check_name_type(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"Invalid run name. Received: {name!r}. Expected a string.")
    return name


def _split_run_argument(text: str) -> tuple[str | None, str, str]:
    """``"name=path"`` -> (name, path, text) unless `text` is itself an existing path."""
    if "=" in text and not os.path.exists(text):
        name, _, path = text.partition("=")
        return name, path, text
    return None, text, text


def _check_name(name: str, argument: str) -> None:
    if not name or name in {".", ".."} or any(c in name for c in "/\\\0"):
        raise ValueError(
            f"Invalid run name {name!r} in {argument!r}. Expected NAME=PATH with a non-empty "
            "NAME without '/' (it becomes a folder name), e.g. baseline=runs/a."
        )


def _check_run_path(path: str, argument: str) -> Path:
    given = repr(path) if path == argument else f"{path!r} (from {argument!r})"
    expected = "Expected a run directory written by tbprobe (holding probe/) or a folder of runs."
    if "://" in path:
        raise ValueError(
            f"Run path {given} is not a local directory; tbprobe launch names runs with "
            f"symlinks. Start `tensorboard --logdir {path}` for remote runs."
        )
    if not path:
        raise ValueError(f"Empty run path in {argument!r}. {expected}")
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise ValueError(f"Run path {given} does not exist. {expected}")
    if not resolved.is_dir():
        raise ValueError(f"Run path {given} is not a directory. {expected}")
    if not _has_event_files_below(resolved):
        raise ValueError(
            f"No TensorBoard event files (events.out.tfevents.*) below {given}. {expected} "
            "Has the training logged anything yet?"
        )
    if not resolved.name:
        raise ValueError(f"Run path {given} has no folder name; give one as NAME={path}.")
    return resolved


def _has_event_files_in(folder: Path) -> bool:
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        return any(_EVENT_FILE_MARKER in entry.name for entry in entries)
    return False


def _has_event_files_below(root: Path) -> bool:
    seen: set[str] = set()  # real paths walked, so that symlink loops end
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        if any(_EVENT_FILE_MARKER in name for name in files):
            return True
    return False


def _is_run(path: Path) -> bool:
    """A run holds event files itself or in probe/, train/ or validation/."""
    return _has_event_files_in(path) or any(_has_event_files_in(path / f) for f in RUN_FOLDERS)


def _link_runs(logdir: Path, links: dict[str, Path]) -> Path:
    logdir.mkdir()
    for name, target in links.items():
        (logdir / name).symlink_to(target, target_is_directory=True)
    return logdir


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _busy_port_message(host: str, port: int) -> str:
    return (
        f"Port {port} on {host} is already in use (another TensorBoard?). Pass a free port, or "
        f"none to take the first free one from {DEFAULT_PORT}."
    )


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


def _pick_port(host: str, port: int | None, start: int = DEFAULT_PORT) -> int:
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"Invalid port. Received: {port!r}. Expected an integer 1-65535.")
        if _port_in_use(host, port):
            raise ValueError(_busy_port_message(host, port))
        return port
    for candidate in range(start, min(start + PORT_SEARCH_SPAN, 65536)):
        if not _port_in_use(host, candidate):
            return candidate
    raise RuntimeError(f"No free port from {start} to {start + PORT_SEARCH_SPAN - 1} on {host}.")


def _tensorboard_flags(
    logdir: Path, host: str, port: int, samples: dict[str, int], title: str
) -> list[str]:
    return [
        sys.executable,
        "-c",
        _TENSORBOARD_MAIN,
        f"--logdir={logdir}",
        f"--host={host}",
        f"--port={port}",
        "--samples_per_plugin=" + ",".join(f"{k}={v}" for k, v in samples.items()),
        # TensorBoard's Python loader otherwise polls only the newest event file of a folder,
        # and a second fit() or a restarted job appends a new one (the data server reads all).
        "--reload_multifile=true",
        f"--window_title={title}",
    ]


def _spawn(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
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


def _get_json(url: str) -> Any:
    """GET `url` (never through a proxy) and parse JSON; None when it does not answer."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5.0) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def _wait_until_serving(
    process: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float
) -> None:
    """Return once TensorBoard lists a run (or answers without one for `_RUNS_GRACE` s)."""
    start = time.monotonic()
    answered_at = None
    while time.monotonic() - start < timeout:
        code = process.poll()
        if code is not None:
            output = _read_text(log_path)
            if "already in use" in output or "could not bind to port" in output:
                raise _PortTaken
            tail = "\n".join(output.splitlines()[-20:])
            raise RuntimeError(f"TensorBoard exited with code {code} before serving {url}:\n{tail}")
        runs = _get_json(url + "data/runs")
        if runs:
            return
        if runs is not None:
            answered_at = answered_at or time.monotonic()
            if time.monotonic() - answered_at > _RUNS_GRACE:
                return
        time.sleep(0.2)
    tail = "\n".join(_read_text(log_path).splitlines()[-20:])
    raise RuntimeError(f"TensorBoard did not answer at {url} within {timeout:g} s:\n{tail}")


def _terminate_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM TensorBoard's process group, SIGKILL whatever is left after `timeout` s."""
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


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_signals_raise_keyboard_interrupt() -> Callable[[], None]:
    """Make SIGTERM, and SIGINT even if inherited as ignored, raise KeyboardInterrupt.

    Returns:
        A function that restores the previous handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_keyboard_interrupt),
    }

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore


class _CallableModule(types.ModuleType):
    """This module, callable as its `launch` function.

    `tbprobe.launch` names both this module and the function that `tbprobe/__init__.py` exports
    lazily. Once anything imports the module first (`tbprobe.cli` does, so does
    `from tbprobe.launch import ...`), Python binds `tbprobe.launch` to the module, and
    `tbprobe.launch(...)` would fail with "'module' object is not callable". Module `__class__`
    assignment is the documented way to customise a module (Python data model, "Customizing
    module attribute access").
    """

    def __call__(self, *runs: Any, **kwargs: Any) -> TensorBoardHandle:
        return launch(*runs, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
