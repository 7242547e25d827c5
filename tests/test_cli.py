"""tbprobe.cli: one table of subcommands, each module imported only for the subcommand that runs.

What `tbprobe launch` and `tbprobe report` do is tested by calling `main` in test_launcher.py
and test_report.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tbprobe import cli

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("tensorflow", "keras", "matplotlib", "tbprobe.launcher", "tbprobe.report")


def modules_imported_by(argv: list[str]) -> tuple[int, str, list[str]]:
    """Run `main(argv)` in a fresh Python: its exit code, stdout, and which of HEAVY it imported."""
    code = (
        "import json, sys\nfrom tbprobe.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as done:\n    code = done.code\n"
        f"print(code, json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    *help_lines, last = done.stdout.splitlines()
    exit_code, _, imported = last.partition(" ")
    return int(exit_code), "\n".join(help_lines), json.loads(imported)


def test_help_lists_every_subcommand_and_imports_none_of_them():
    code, text, imported = modules_imported_by(["--help"])
    assert code == 0
    words = " ".join(text.split())  # argparse wraps the summaries
    for command in cli.SUBCOMMANDS:
        assert f"{command.name} {command.summary}" in words
    assert imported == []


@pytest.mark.parametrize(
    ("command", "module", "option"),
    [("launch", "tbprobe.launcher", "--samples-per-plugin"), ("report", "tbprobe.report", "--out")],
)
def test_subcommand_help_imports_its_module_only(command, module, option):
    code, text, imported = modules_imported_by([command, "--help"])
    assert code == 0
    assert option in text
    assert imported == [module]


def test_unknown_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["lanch", "runs/"])
    assert done.value.code == 2
    assert "invalid choice: 'lanch'" in capsys.readouterr().err


def test_each_subcommand_runs_its_own_runner(monkeypatch):
    calls = []
    table = tuple(
        cli.Subcommand(c.name, c.summary, lambda p: p.add_argument("x"), _recorder(c.name, calls))
        for c in cli.SUBCOMMANDS
    )
    monkeypatch.setattr(cli, "SUBCOMMANDS", table)
    assert [cli.main([c.name, "arg"]) for c in table] == list(range(len(table)))
    assert calls == [(c.name, "arg") for c in table]


def _recorder(name, calls):
    def run(args):
        calls.append((name, args.x))
        return len(calls) - 1

    return run
