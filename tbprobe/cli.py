"""The `tbprobe` command: `tbprobe launch ...`, `tbprobe report ...` and `tbprobe check ...`.

Each subcommand lives in its own module, which provides `add_arguments(parser)` and
`run(args) -> int`; modules are imported only for the subcommand that runs, so `tbprobe --help`
starts without importing TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

SUBCOMMANDS = {
    "launch": (
        "tbprobe.launcher",
        "start TensorBoard on one run, every run below a folder, or named runs",
    ),
    "report": ("tbprobe.report", "write a static HTML/PNG report comparing runs"),
    "check": ("tbprobe.check", "print each run's findings; exit 1 when a run has one"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `tbprobe` command."""
    parser = argparse.ArgumentParser(
        prog="tbprobe",
        description="See what the hidden layers of a Keras model do while it trains.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, summary) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        sub.set_defaults(module=module)
        importlib.import_module(module).add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `tbprobe` command with `argv` (default: `sys.argv[1:]`); return the exit code."""
    args = build_parser().parse_args(argv)
    return importlib.import_module(args.module).run(args)


if __name__ == "__main__":
    sys.exit(main())
