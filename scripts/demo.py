"""Set up ``.venv`` (first run only), then train the demo runs and launch TensorBoard on them.

Usage: ``python3 scripts/demo.py [demo args...]``; ``--no-launch`` (or ``CI=true``) skips the
launch. See ``demo/__main__.py`` for the options. Once set up, this process becomes the demo
(`_venv.run_in_venv`): Ctrl-C or SIGTERM ends it with one line and exit status 130 (0 when it
stops the TensorBoard it serves, as announced), TensorBoard included.
"""

from __future__ import annotations

import sys

from _venv import run_in_venv

if __name__ == "__main__":
    sys.exit(run_in_venv(["-m", "demo", *sys.argv[1:]]))
