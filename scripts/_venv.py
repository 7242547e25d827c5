"""Create or reuse the project's virtualenv (``.venv``) and install tbprobe into it.

Shared by ``scripts/demo.py`` and ``scripts/test.py`` so that a fresh machine with only
``python3`` needs nothing else. The install is skipped when ``pyproject.toml`` has not changed
since the last one (a hash is kept in ``.venv/tbprobe-install.stamp``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
STAMP = VENV / "tbprobe-install.stamp"


def venv_python() -> Path:
    """Path of the virtualenv's interpreter (POSIX or Windows layout)."""
    unix = VENV / "bin" / "python"
    return unix if unix.exists() else VENV / "Scripts" / "python.exe"


def install_stamp(extras: str) -> str:
    """What ``STAMP`` holds once ``tbprobe[extras]`` is installed from this ``pyproject.toml``."""
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()


def ensure_venv(extras: str = "test") -> Path:
    """Create ``.venv`` if needed, install ``tbprobe[extras]`` editable, return its python."""
    if not venv_python().exists():
        print(f"[tbprobe] creating virtualenv {VENV.name}/", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = install_stamp(extras)
    if not STAMP.exists() or STAMP.read_text().strip() != wanted:
        python = str(venv_python())
        print("[tbprobe] installing tbprobe and its dependencies into .venv", flush=True)
        subprocess.check_call([python, "-m", "pip", "install", "-q", "--upgrade", "pip"])
        target = f".[{extras}]" if extras else "."
        subprocess.check_call([python, "-m", "pip", "install", "-q", "-e", target], cwd=ROOT)
        STAMP.write_text(wanted)
    return venv_python()


def run_in_venv(args: list[str], extras: str = "test") -> int:
    """Run ``python args...`` inside the project's virtualenv from the repository root.

    On POSIX this process becomes the virtualenv's Python (`os.execve`, same process id), so that
    signals sent to it (Ctrl-C, SIGTERM from an IDE's stop button or ``kill PID``) reach the
    program itself, which reports them as it does: the demo ends with one line and exit status
    130, pytest with its ``KeyboardInterrupt`` summary and exit status 2. On Windows, which has
    no exec, the program runs as a child and Ctrl-C (sent to both) ends the wrapper with 130.

    Returns:
        The program's exit status (on Windows only: on POSIX this function does not return).
    """
    python = str(ensure_venv(extras))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    if os.name == "posix":
        os.chdir(ROOT)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(python, [python, *args], env)
    try:
        return subprocess.call([python, *args], cwd=ROOT, env=env)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(run_in_venv(sys.argv[1:]))
