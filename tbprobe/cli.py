"""The `tbprobe` command: `tbprobe launch ...`, `tbprobe report ...` and `tbprobe check ...`.

Every subcommand is one row of `SUBCOMMANDS`: its name, a one-line summary, a function adding
its arguments to its parser and a function running it. Both functions import the module that
does the work (`tbprobe.launcher`, `tbprobe.report`) when called, and `build_parser` adds the
arguments of the subcommand named on the command line only, so `tbprobe --help` imports none
of them, and no subcommand imports TensorFlow.

Example::

    $ tbprobe launch baseline=runs/a high_lr=runs/b
    $ tbprobe report runs/ -o report/

    >>> main(["report", "runs/", "-o", "report/"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Subcommand:
    """One subcommand of `tbprobe`.

    Attributes:
        name: What follows `tbprobe` on the command line.
        summary: One line, shown by `tbprobe --help` and atop the subcommand's help.
        add_arguments: Adds the subcommand's arguments to its parser.
        run: Runs it with the parsed arguments; returns the exit code.
    """

    name: str
    summary: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of `tbprobe launch` to `parser`."""
    from tbprobe.launcher import DEFAULT_HOST, DEFAULT_SAMPLES_PER_PLUGIN, DEFAULT_TIMEOUT
    from tbprobe.tensorboard_process import DEFAULT_PORT

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


def run_launch(args: argparse.Namespace) -> int:
    """Run `tbprobe launch`: serve until Ctrl-C or SIGTERM.

    Returns:
        0 once stopped by a signal, 1 when TensorBoard exits or fails to start, 2 for bad
        arguments (the message printed to stderr).
    """
    from tbprobe.launcher import launch
    from tbprobe.tensorboard_process import LOG_TAIL_LINES

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
            print(
                f"TensorBoard at {handle.dashboard_url} (pid {handle.pid}); Ctrl-C stops it",
                flush=True,
            )
            for name, path in handle.links.items():
                print(f"  {name}: {path}", flush=True)
            print(f"  logdir: {handle.logdir}", flush=True)
            code = handle.process.wait()
        print(
            f"tbprobe launch: TensorBoard exited with code {code}:\n{handle.output(LOG_TAIL_LINES)}",
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


def add_runs_argument(parser: argparse.ArgumentParser) -> None:
    """Add the positional RUN_OR_PARENT arguments of `tbprobe report` and `tbprobe check`."""
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_OR_PARENT",
        help="a run folder (holding probe/), a folder with runs below it, or NAME=PATH",
    )


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of `tbprobe report` to `parser`."""
    from tbprobe.report import DEFAULT_DEAD_THRESHOLD, DEFAULT_MAX_LAYERS

    add_runs_argument(parser)
    parser.add_argument("-o", "--out", required=True, help="output folder for index.html")
    parser.add_argument(
        "--dead-threshold",
        type=float,
        default=DEFAULT_DEAD_THRESHOLD,
        help="flag layers whose dead-unit fraction is at least this (default %(default)s)",
    )
    parser.add_argument(
        "--max-layers",
        type=int,
        default=DEFAULT_MAX_LAYERS,
        help="layers drawn in color per metric plot; the rest in gray (default %(default)s)",
    )


def run_report(args: argparse.Namespace) -> int:
    """Run `tbprobe report`.

    Returns:
        0, 2 for bad input or 1 when the output cannot be written (the error printed to stderr).
    """
    from tbprobe.report import write_report

    try:
        index = write_report(
            args.runs, args.out, dead_threshold=args.dead_threshold, max_layers=args.max_layers
        )
    except ValueError as error:
        print(f"tbprobe report: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. an output folder that cannot be written
        print(f"tbprobe report: error: {error}", file=sys.stderr)
        return 1
    print(f"Wrote {index}")
    return 0


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of `tbprobe check` to `parser`."""
    add_runs_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")


def run_check(args: argparse.Namespace) -> int:
    """Run `tbprobe check`.

    Returns:
        1 when a run has a finding, 0 when none has, 2 for bad paths (printed to stderr).
    """
    import json

    from tbprobe.check import check_runs, findings_json, findings_text

    try:
        results = check_runs(*args.runs)
    except (ValueError, TypeError) as error:
        print(f"tbprobe check: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([findings_json(result) for result in results], indent=2))
    else:
        for result in results:
            print(findings_text(result))
    return 1 if any(result.findings for result in results) else 0


SUBCOMMANDS = (
    Subcommand(
        "launch",
        "start TensorBoard on one run, every run below a folder, or named runs",
        add_launch_arguments,
        run_launch,
    ),
    Subcommand(
        "report",
        "write a static HTML/PNG report comparing runs",
        add_report_arguments,
        run_report,
    ),
    Subcommand(
        "check",
        "print each run's findings; exit 1 when a run has one",
        add_check_arguments,
        run_check,
    ),
)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The argument parser of the `tbprobe` command.

    Args:
        argv: The command line to be parsed: only the subcommand it names (its first item) gets
            its arguments, which imports that subcommand's module and no other.

    Returns:
        The parser; each subparser sets ``run``, the `Subcommand.run` of its subcommand.
    """
    parser = argparse.ArgumentParser(
        prog="tbprobe",
        description="See what the hidden layers of a Keras model do while it trains.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in SUBCOMMANDS:
        sub = commands.add_parser(command.name, help=command.summary, description=command.summary)
        sub.set_defaults(run=command.run)
        if list(argv[:1]) == [command.name]:
            command.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `tbprobe` command with `argv` (default: `sys.argv[1:]`); return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    return args.run(args)


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


if __name__ == "__main__":
    sys.exit(main())
