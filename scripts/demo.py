"""Set up ``.venv`` (first run only), then train the demo runs and launch TensorBoard on them.

Usage: ``python3 scripts/demo.py [demo args...]``; ``--no-launch`` (or ``CI=true``) skips the
launch. See ``demo/__main__.py`` for the options.
"""

from __future__ import annotations

import sys

from _venv import run_in_venv

if __name__ == "__main__":
    sys.exit(run_in_venv(["-m", "demo", *sys.argv[1:]]))
