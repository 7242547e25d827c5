"""Set up ``.venv`` (first run only) and run the whole test suite, slow and browser tests included.

Usage: ``python3 scripts/test.py [pytest args...]`` (e.g. ``-m "not slow"`` for the quick loop).
Once set up, this process becomes pytest (`_venv.run_in_venv`): Ctrl-C or SIGINT ends it as
pytest ends, with its ``KeyboardInterrupt`` summary and exit status 2.
"""

from __future__ import annotations

import sys

from _venv import run_in_venv

if __name__ == "__main__":
    sys.exit(run_in_venv(["-m", "pytest", *sys.argv[1:]]))
