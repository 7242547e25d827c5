"""tbprobe.findings: the thresholds (`Checks`), `Finding`, `FindingsError`, `checks=` values."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from tbprobe.findings import Checks, Finding, FindingsError, resolve_checks


def make_finding(tag: str = "conv1") -> Finding:
    return Finding("dead_layer", tag, 5, 9, 1.0, 0.9, "all dead", "lower it", f"dead in {tag}")


def test_defaults_are_the_issue_table():
    checks = Checks()
    table = {"dead_units": 0.9, "dying_rise": 0.3, "saturated": 0.9, "std_growth": 100.0}
    table |= {"std_limit": 1e4, "gradient_ratio_low": 1e-4, "gradient_ratio_high": 1e4}
    table |= {"update_ratio_low": 1e-5, "update_ratio_high": 1e-1, "attention_entropy": 0.1}
    assert {name: getattr(checks, name) for name in table} == table


def test_checks_are_frozen_and_replaceable():
    checks = Checks(dead_units=0.8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        checks.dead_units = 0.5
    assert dataclasses.replace(checks, saturated=0.5) == Checks(dead_units=0.8, saturated=0.5)
    assert pickle.loads(pickle.dumps(checks)) == checks


def test_misspelt_check_names_the_closest():
    with pytest.raises(TypeError, match=r"Unknown check 'dead_unit'\. Did you mean 'dead_units'"):
        Checks(dead_unit=0.8)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("dead_units", 1.5, "a fraction in"),
        ("dead_units", "0.9", "a fraction in"),
        ("dying_rise", True, "a fraction in"),
        ("nonfinite", 1.0, r"a fraction in \[0, 1\)"),
        ("std_growth", 0.5, "a number >= 1"),
        ("std_limit", 0.0, "a positive number"),
        ("update_ratio_high", 1e-6, "a number above update_ratio_low=1e-05"),
        ("gradient_ratio_high", float("nan"), "a number above gradient_ratio_low"),
    ],
)
def test_bad_thresholds_are_keras_style_errors(name, value, expected):
    with pytest.raises(ValueError, match=rf"Invalid value for argument `{name}`\. Received: "):
        Checks(**{name: value})
    with pytest.raises(ValueError, match=f"Expected {expected}"):
        Checks(**{name: value})


@pytest.mark.parametrize(("given", "expected"), [(True, Checks()), (None, Checks()), (False, None)])
def test_resolve_checks(given, expected):
    assert resolve_checks(given) == expected


def test_resolve_checks_keeps_an_instance_and_refuses_the_rest():
    checks = Checks(dead_units=0.5)
    assert resolve_checks(checks) is checks
    with pytest.raises(ValueError, match=r"Received: checks=\{'dead_units': 0\.5\}"):
        resolve_checks({"dead_units": 0.5})


def test_findings_error_carries_the_findings():
    findings = [make_finding("conv1"), make_finding("conv2")]
    error = FindingsError(findings)
    assert error.findings == tuple(findings)
    assert str(error).splitlines() == [
        "tbprobe found 2 problem(s):",
        "  dead in conv1",
        "  dead in conv2",
    ]
