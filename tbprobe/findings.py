"""Findings: what looks wrong in a run, in which layer, since when; and their thresholds.

A `Finding` says what looks wrong, in which layer, since which step, with the evidence and what
to try: "dead layer in conv2 since step 47: 100% of its units output 0 ...". The rules
(`tbprobe.rules`) find them in the scalars tbprobe logs, with the thresholds of `Checks`;
`tbprobe.monitor` follows a run log by log (`Probe`) or replays a logged one (`tbprobe check`).
TensorFlow-free.

Example:
    >>> probe = tbprobe.Probe(model, "runs/a", sample=x[:16], checks=Checks(dead_units=0.8))
    >>> probe.log(step)
    >>> [finding.message for finding in probe.findings()]
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Checks:
    """The thresholds of the diagnosis rules (see the README's Diagnosis table).

    Attributes:
        dead_units: dead layer: `dead_units` at least this, on an output below it at its
            first log.
        dying_rise: dying trend: `dead_units` rose by at least this since the first log (and
            the layer is not yet a dead layer).
        saturated: saturation: `saturated` at least this (only logged for sigmoid, tanh and
            softmax-like outputs; the model's final output, meant to become confident, is not
            checked).
        nonfinite: first non-finite: `nonfinite` (or `gradient_nonfinite`) above this.
        std_growth: exploding activations: `std` at least this many times its first logged
            value, counted from at least `std_floor`.
        std_floor: the smallest first `std` the growth is counted from, so that an output
            initialized near 0 growing to unit scale is not "exploding".
        std_limit: exploding activations: `std` above this, whatever its first value.
        gradient_ratio_low: vanishing gradients: `gradient_rms` of the first probed output
            over that of the last below this.
        gradient_ratio_high: exploding gradients: the same ratio above this.
        update_ratio_low: update ratio: a layer's `update_ratio` below this is too low.
        update_ratio_high: update ratio: a layer's `update_ratio` above this is too high.
        update_ratio_layers: update ratio: fires when more than this fraction of the layers
            is too high (or too low).
        attention_entropy: attention collapse: `attention_entropy_min` below this.

    Raises:
        ValueError: a threshold of the wrong type or out of range.
        TypeError: an unknown field, with the closest valid name.

    Example:
        >>> probe = tbprobe.Probe(model, "runs/a", sample=x[:16], checks=Checks(dead_units=0.8))
    """

    dead_units: float = 0.9
    dying_rise: float = 0.3
    saturated: float = 0.9
    nonfinite: float = 0.0
    std_growth: float = 100.0
    std_floor: float = 1.0
    std_limit: float = 1e4
    gradient_ratio_low: float = 1e-4
    gradient_ratio_high: float = 1e4
    update_ratio_low: float = 1e-5
    update_ratio_high: float = 1e-1
    update_ratio_layers: float = 0.5
    attention_entropy: float = 0.1

    def __new__(cls, *args: Any, **kwargs: Any) -> Checks:
        # The dataclass's own __init__ would say only "unexpected keyword argument".
        names = [field.name for field in dataclasses.fields(cls)]
        for key in kwargs:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise TypeError(f"Unknown check {key!r}.{hint} Valid checks: {', '.join(names)}.")
        return super().__new__(cls)

    def __post_init__(self) -> None:
        fractions = ("dead_units", "dying_rise", "saturated", "attention_entropy")
        for name in fractions:
            _check_number(name, getattr(self, name), 0.0, 1.0, "a fraction in [0, 1]")
        for name in ("nonfinite", "update_ratio_layers"):
            _check_number(name, getattr(self, name), 0.0, 1.0, "a fraction in [0, 1)", high=False)
        _check_number("std_growth", self.std_growth, 1.0, math.inf, "a number >= 1")
        for name in ("std_floor", "std_limit", "gradient_ratio_low", "update_ratio_low"):
            _check_number(name, getattr(self, name), 0.0, math.inf, "a positive number", low=False)
        for pair in ("gradient_ratio", "update_ratio"):
            lower = getattr(self, f"{pair}_low")
            _check_number(
                f"{pair}_high",
                getattr(self, f"{pair}_high"),
                lower,
                math.inf,
                f"a number above {pair}_low={lower!r}",
                low=False,
            )


@dataclass(frozen=True)
class Finding:
    """One thing that looks wrong in a run.

    Attributes:
        rule: the rule's id, e.g. `"dead_layer"` (the keys of `tbprobe.rules.TITLES`).
        tag: the probed output (or layer) it is about; `""` for a finding about all layers.
        first_step: the step it was first seen at (in its current, unbroken stretch).
        last_step: the last step it was seen at.
        value: the evidence's value at `last_step` (e.g. the dead fraction).
        threshold: the threshold `value` was compared with.
        evidence: what was measured, in words.
        hint: what to try.
        message: one sentence with all of it, as logged.
    """

    rule: str
    tag: str
    first_step: int
    last_step: int
    value: float
    threshold: float
    evidence: str
    hint: str
    message: str


class FindingsError(RuntimeError):
    """Raised by `ProbeCallback(on_finding="raise")`: the findings of the log that found them.

    Attributes:
        findings: the findings active after that log.
    """

    def __init__(self, findings: Sequence[Finding]):
        self.findings = tuple(findings)
        lines = "\n".join(f"  {finding.message}" for finding in self.findings)
        super().__init__(f"tbprobe found {len(self.findings)} problem(s):\n{lines}")


def resolve_checks(checks: Checks | bool | None) -> Checks | None:
    """`checks=` of `Probe` and `ProbeCallback`: a `Checks`, or None when turned off.

    Raises:
        ValueError: anything but a `Checks`, True, None or False.
    """
    if checks is None or checks is True:
        return Checks()
    if checks is False:
        return None
    if isinstance(checks, Checks):
        return checks
    raise ValueError(
        f"Invalid value for argument `checks`. Received: checks={checks!r}. Expected "
        "tbprobe.Checks(...) (e.g. Checks(dead_units=0.8)), True for the defaults or False to "
        "turn the diagnosis off."
    )


def _check_number(
    name: str,
    value: Any,
    lowest: float,
    highest: float,
    expected: str,
    low: bool = True,
    high: bool = True,
) -> None:
    """ValueError unless `value` is a real number in the range (`low`/`high`: bounds included)."""
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if ok:
        ok = (value >= lowest if low else value > lowest) and (
            value <= highest if high else value < highest
        )
    if not ok:
        raise ValueError(
            f"Invalid value for argument `{name}`. Received: {name}={value!r}. Expected {expected}."
        )
