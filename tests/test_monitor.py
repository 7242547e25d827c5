"""tbprobe.monitor: findings followed log by log (appear, persist, clear), the same as a replay
of the history; their WARNINGs and their TensorBoard card."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tbprobe.findings import Checks
from tbprobe.monitor import FindingsMonitor, diagnose, health_markdown, log_change

DEAD = {"conv1": {"dead_units": 1.0}, "conv2": {"dead_units": 1.0}, "dense": {"dead_units": 0.1}}
ALIVE = {"conv1": {"dead_units": 0.0}, "conv2": {"dead_units": 0.0}, "dense": {"dead_units": 0.1}}


def test_findings_appear_persist_and_clear():
    monitor = FindingsMonitor()
    assert not monitor.update(0, ALIVE).changed
    change = monitor.update(5, DEAD)
    assert [(f.tag, f.first_step, f.last_step) for f in change.appeared] == [
        ("conv1", 5, 5),
        ("conv2", 5, 5),
    ]
    change = monitor.update(9, DEAD)
    assert not change.changed
    assert [(f.tag, f.first_step, f.last_step) for f in change.findings] == [
        ("conv1", 5, 9),
        ("conv2", 5, 9),
    ]
    change = monitor.update(12, ALIVE)
    assert [(f.tag, f.last_step) for f in change.cleared] == [("conv1", 9), ("conv2", 9)]
    assert change.findings == () and monitor.findings == ()


def test_checks_change_what_is_found():
    monitor = FindingsMonitor(Checks(dead_units=0.05))
    monitor.update(0, {"dense": {"dead_units": 0.0}})
    assert [f.tag for f in monitor.update(1, {"dense": {"dead_units": 0.1}}).findings] == ["dense"]


def test_replay_agrees_with_the_live_monitor_on_partial_logs():
    rng = np.random.default_rng(0)
    steps = np.arange(0, 200, 10)
    history = {
        tag: {"dead_units": (steps[start:], rng.choice([0.0, 0.5, 1.0], len(steps) - start))}
        for tag, start in (("a", 0), ("b", 3), ("c", 0))
    }
    history["c"]["nonfinite"] = (steps[::2], rng.choice([0.0, 1.0], len(steps[::2])))
    monitor = FindingsMonitor()
    for step in steps:
        logged = {}
        for tag, metrics in history.items():
            for metric, (at, values) in metrics.items():
                hit = np.flatnonzero(at == step)
                if hit.size:
                    logged.setdefault(tag, {})[metric] = float(values[hit[0]])
        monitor.update(int(step), logged)
    assert monitor.findings  # the random history has some
    assert diagnose(history) == list(monitor.findings)


def test_one_warning_per_rule_when_findings_appear_and_when_they_clear(caplog):
    monitor = FindingsMonitor()
    monitor.update(0, ALIVE)
    with caplog.at_level(logging.WARNING, logger="tbprobe"):
        log_change(monitor.update(5, DEAD))
        for step in range(6, 56):
            log_change(monitor.update(step, DEAD))
        log_change(monitor.update(60, ALIVE))
    records = [r for r in caplog.records if r.name == "tbprobe"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.WARNING]
    appeared, cleared = (r.getMessage() for r in records)
    assert appeared.splitlines()[0] == "dead layer in 2 outputs since step 5:"
    assert [line.split(":")[0].strip() for line in appeared.splitlines()[1:3]] == ["conv1", "conv2"]
    assert cleared == "cleared at step 60: dead layer in conv1 (from step 5), conv2 (from step 5)"


def test_a_single_finding_is_logged_as_its_message(caplog):
    monitor = FindingsMonitor()
    monitor.update(0, {"conv1": {"dead_units": 0.0}})
    with caplog.at_level(logging.WARNING, logger="tbprobe"):
        change = monitor.update(3, {"conv1": {"dead_units": 1.0}})
        log_change(change)
    assert [r.getMessage() for r in caplog.records] == [change.appeared[0].message]


def test_health_markdown_table():
    monitor = FindingsMonitor()
    monitor.update(0, ALIVE)
    change = monitor.update(5, DEAD)
    lines = health_markdown(change).splitlines()
    assert lines[0] == "**2 finding(s) at step 5**"
    assert lines[2] == "| rule | layer | since | evidence | hint |"
    rows = [line.strip("| ").split(" | ") for line in lines[4:]]
    assert [row[:3] for row in rows] == [
        ["dead layer", "`conv1`", "step 5"],
        ["dead layer", "`conv2`", "step 5"],
    ]
    assert rows[0][3] == change.findings[0].evidence
    cleared = health_markdown(monitor.update(6, ALIVE)).splitlines()
    assert cleared[0] == "**0 finding(s) at step 6**"
    assert cleared[-1] == "Cleared at this step: dead layer in `conv1`, dead layer in `conv2`."


@pytest.mark.parametrize("bad", [{"l": {"update_ratio": 0.5}}, {"l": {"update_ratio": 1e-9}}])
def test_findings_about_all_layers_have_no_tag(bad):
    monitor = FindingsMonitor()
    (finding,) = monitor.update(0, bad).findings
    assert finding.tag == ""
    assert "| update ratio | all layers |" in health_markdown(monitor.update(1, bad))
