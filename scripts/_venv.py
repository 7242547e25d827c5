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


def ensure_venv(extras: str = "test") -> Path:
    """Create ``.venv`` if needed, install ``tbprobe[extras]`` editable, return its python."""
    if not venv_python().exists():
        print(f"[tbprobe] creating virtualenv {VENV.name}/", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    if not STAMP.exists() or STAMP.read_text().strip() != wanted:
        python = str(venv_python())
        print("[tbprobe] installing tbprobe and its dependencies into .venv", flush=True)
        subprocess.check_call([python, "-m", "pip", "install", "-q", "--upgrade", "pip"])
        target = f".[{extras}]" if extras else "."
        subprocess.check_call([python, "-m", "pip", "install", "-q", "-e", target], cwd=ROOT)
        STAMP.write_text(wanted)
    return venv_python()


def run_in_venv(args: list[str], extras: str = "test") -> int:
    """Run ``python args...`` inside the project's virtualenv from the repository root."""
    python = ensure_venv(extras)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    return subprocess.call([str(python), *args], cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(run_in_venv(sys.argv[1:]))
