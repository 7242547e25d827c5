"""Start TensorBoard on tbprobe runs: one run, every run below a folder, or named runs side by side.

Runs are given and named as described in `tbprobe.runs`: TensorBoard discourages
``--logdir_spec``, so names come from a temporary folder of symlinks (``name -> absolute run
path``) given as ``--logdir`` and removed when TensorBoard stops. A folder of runs given alone is
passed as it is, so runs that appear in it later are shown too.

TensorBoard runs in a session of its own (`tbprobe.tensorboard_process`): Ctrl-C in a terminal
reaches only the launcher, which then stops TensorBoard's whole process group (TensorBoard and
its data server).

Example::

    with tbprobe.launch({"baseline": "runs/a", "high_lr": "runs/b"}) as tensorboard:
        print(tensorboard.url)
"""

from __future__ import annotations

import atexit
import html
import shutil
import subprocess
import tempfile
import threading
import webbrowser
from collections.abc import Mapping, Sequence
from pathlib import Path

from tbprobe.dashboard import PLUGIN_NAME
from tbprobe.runs import RunArgumentLike, link_runs, resolve_logdir
from tbprobe.tensorboard_process import (
    PortTaken,
    busy_port_message,
    last_lines,
    page_urls,
    pick_port,
    read_log,
    start_in_new_session,
    tensorboard_command,
    terminate_group,
    wait_until_serving,
)

DEFAULT_HOST = "localhost"
# TensorBoard keeps 10 image steps per tag by default, too few to follow feature maps through a
# training. `images=0` means "keep all" to TensorBoard, but the project's design notes found the
# image dashboard empty with it, so a count is used. Histograms (500) and scalars (1000) keep
# TensorBoard's defaults.
DEFAULT_SAMPLES_PER_PLUGIN = {"images": 100}
DEFAULT_TIMEOUT = 120.0
NOTEBOOK_FRAME_HEIGHT = 800  # pixels, as TensorBoard's %tensorboard magic

_PORT_ATTEMPTS = 3


class TensorBoardHandle:
    """A TensorBoard process started by `launch`; stop it with `stop()` or a `with` block.

    Attributes:
        url: Address of the TensorBoard page, e.g. ``http://localhost:6006/``.
        dashboard_url: The page opened on the tbprobe tab, ``http://localhost:6006/#tbprobe``.
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
    def dashboard_url(self) -> str:
        """The page opened on the tbprobe tab (TensorBoard selects a tab by `#<plugin name>`)."""
        return f"{self.url}#{PLUGIN_NAME}"

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
            text = read_log(self._workdir / "tensorboard.log")
        return text if lines is None else last_lines(text, lines)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop TensorBoard and its data server, remove the symlink folder. Safe to call twice.

        Args:
            timeout: Seconds to wait after SIGTERM before the process group is killed.
        """
        with self._lock:
            if self._final_output is not None:
                return
            # Interrupted here (a second Ctrl-C), the atexit safeguard stays registered.
            terminate_group(self.process, timeout)
            self._final_output = self.output()
            shutil.rmtree(self._workdir, ignore_errors=True)
            atexit.unregister(self.stop)

    def __enter__(self) -> TensorBoardHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _repr_html_(self) -> str:
        """TensorBoard inline in Jupyter, on the tbprobe tab (an iframe, as `%tensorboard`)."""
        if not self.running:
            return f"<p>TensorBoard at {html.escape(self.url)} has stopped.</p>"
        return (
            f'<iframe src="{html.escape(self.dashboard_url)}" width="100%" '
            f'height="{NOTEBOOK_FRAME_HEIGHT}" frameborder="0"></iframe>'
        )

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"TensorBoardHandle(url={self.url!r}, pid={self.pid}, {state})"


def launch(
    *runs: RunArgumentLike,
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
    plan = resolve_logdir(*runs)
    samples = {**DEFAULT_SAMPLES_PER_PLUGIN, **parse_samples_per_plugin(samples_per_plugin)}
    chosen = pick_port(host, port)
    workdir = Path(tempfile.mkdtemp(prefix="tbprobe-launch-"))
    log_path = workdir / "tensorboard.log"
    try:
        links = plan.links
        logdir = plan.folder or link_runs(workdir / "logdir", links)
        title = "tbprobe: " + (", ".join(links) or logdir.name)
        for attempt in range(_PORT_ATTEMPTS):
            command = tensorboard_command(logdir, host, chosen, samples, title, tensorboard_args)
            process = start_in_new_session(command, log_path)
            url, poll_url = page_urls(host, chosen)
            try:
                wait_until_serving(process, poll_url, log_path, timeout)
                break
            except PortTaken:
                # Another program bound the port between our check and TensorBoard's bind.
                terminate_group(process, timeout=5.0)
                if port is not None or attempt == _PORT_ATTEMPTS - 1:
                    raise ValueError(busy_port_message(host, chosen)) from None
                chosen = pick_port(host, None, start=chosen + 1)
            except BaseException:
                terminate_group(process, timeout=5.0)
                raise
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    handle = TensorBoardHandle(
        process, url=url, host=host, port=chosen, logdir=logdir, links=links, workdir=workdir
    )
    if open_browser:
        webbrowser.open(handle.dashboard_url)
    return handle


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
    items: list[tuple[object, object]]
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
