"""The demo (the README's main command) and its custom-loop example, end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tb_helpers import read_events

ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_demo_trains_two_runs_and_tells_them_apart(tmp_path):
    runs = tmp_path / "runs"
    done = run(
        ["scripts/demo.py", "--runs-dir", str(runs), "--epochs", "2", "--train-size", "1000"],
        CI="true",
    )
    assert "what tbprobe saw after the last epoch" in done.stdout
    assert "tbprobe launch baseline=" in done.stdout  # CI=true: no TensorBoard started
    for name in ("baseline", "high_lr"):
        assert {p.name for p in (runs / name).iterdir()} == {"probe", "train", "validation"}
    baseline = read_events(runs / "baseline/probe")
    high_lr = read_events(runs / "high_lr/probe")
    assert baseline["conv3/dead_units"]["steps"] == [0, 16, 32]
    # Same initialization (step 0), then the high learning rate kills the ReLU layers.
    for layer in ("conv1", "conv2", "conv3"):
        start = baseline[f"{layer}/dead_units"]["values"][0]
        assert high_lr[f"{layer}/dead_units"]["values"][0] == start
        assert high_lr[f"{layer}/dead_units"]["values"][-1] > 0.9
        assert baseline[f"{layer}/dead_units"]["values"][-1] < 0.5
    # The diagnosis, as it trains: high_lr's dead layers named in WARNINGs, baseline quiet.
    trained_baseline, trained_high_lr = done.stdout.split("== run 'high_lr'")
    assert "tbprobe WARNING" not in trained_baseline
    named = set(re.findall(r"^  (\w+): \d+% of its units output 0", trained_high_lr, re.M))
    named |= set(re.findall(r"WARNING: dead layer in (\w+) since step", trained_high_lr))
    assert {"conv1", "conv2", "conv3"} <= named
    last = {k.split("/")[0]: e["values"][-1] for k, e in high_lr.items() if "/dead_units" in k}
    dead = {layer for layer, value in last.items() if value >= 0.9}
    assert named == dead
    # and offline: `tbprobe check` names the same dead layers, and exits 1.
    check = subprocess.run(
        [sys.executable, "-m", "tbprobe.cli", "check", "--json", str(runs)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 1, check.stderr
    results = {r["run"]: r["findings"] for r in json.loads(check.stdout)}
    assert results["baseline"] == []
    assert {f["tag"] for f in results["high_lr"] if f["rule"] == "dead_layer"} == dead


@pytest.mark.slow
def test_custom_loop_example(tmp_path):
    done = run(["-m", "demo.custom_loop", "--run-dir", str(tmp_path), "--steps", "100"])
    assert "step 50: loss" in done.stdout and "step 100: loss" in done.stdout
    assert read_events(tmp_path / "probe")["conv1/sparsity"]["steps"] == [50, 100]


@pytest.mark.slow
def test_transformer_demo_logs_attention_maps(tmp_path):
    done = run(["-m", "demo.transformer", "--run-dir", str(tmp_path), "--epochs", "1"])
    assert "attention/attention  MultiHeadAttention" in done.stdout  # the probe tree
    events = read_events(tmp_path / "probe")
    for block in ("block_0", "block_1"):
        assert events[f"{block}/attention/attention"]["plugin"] == "images"
        assert events[f"{block}/attention/attention_entropy"]["steps"] == [0, 47]
        assert f"{block}/attention/query/activations" in events
