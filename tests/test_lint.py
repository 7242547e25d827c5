"""The code base stays formatted, lint-clean and type-checked with the configuration in
pyproject.toml (ruff; mypy over tbprobe/, from the [test] extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUFF = Path(sys.executable).with_name("ruff")
PATHS = ["tbprobe", "tests", "demo", "scripts"]


@pytest.mark.parametrize("command", [["format", "--check"], ["check"]])
def test_ruff(command):
    done = subprocess.run([str(RUFF), *command, *PATHS], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy():
    pytest.importorskip("mypy", reason="mypy comes with the [test] extra: pip install -e '.[test]'")
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
