"""scripts/bench.py --quick runs end to end and prints its table; no timing is asserted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "scripts" / "bench.py"

# Measurement name (start of the table's second column) -> rows expected with that name, each
# with a ratio in the Ratio column.
MEASUREMENTS = {
    "forward pass": 1,
    "tbprobe log step": 2,  # and its images=False twin
    "seed-article log": 1,
    "built-once tf.function + tf.summary.histogram": 1,
    "first log": 1,
    "peak RSS": 1,
    "fit overhead, ProbeCallback defaults": 2,  # and its "traced before fit" twin
    "fit overhead, ProbeCallback every_n_batches=100": 2,
    "graph ops per probed output": 1,
    "event bytes per log": 1,
}
RATIO = re.compile(r"^\d+(\.\d+)?x$")


def table_rows(text: str) -> list[list[str]]:
    """The cells of every body row of the Markdown table in `text`."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


@pytest.mark.slow
def test_quick_benchmark_prints_every_measurement_with_a_ratio(tmp_path):
    out = tmp_path / "bench.md"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    rows = table_rows(done.stdout)
    assert rows, done.stdout
    for name, count in MEASUREMENTS.items():
        matching = [row for row in rows if row[1].startswith(name)]
        assert len(matching) == count, (name, [row[1] for row in rows])
        for row in matching:
            assert RATIO.match(row[4]), (name, row)
    for header in ("Command:", "CPU:", "TensorFlow", "Keras", "TensorBoard"):
        assert header in done.stdout
    assert table_rows(out.read_text()) == rows
