"""Following a run's findings log by log (`FindingsMonitor`), or over a logged history.

`FindingsMonitor.update(step, scalars)` takes one log step's scalars, as `Probe` does after
each log, and says which findings appeared and which cleared. Per step it costs one pass over
that step's scalars whatever the number of steps before: the rules read only a `RunMemory`
(first and latest value of each scalar, where non-finite values first appeared).
`diagnose(history)` replays a logged history (`tbprobe.events.RunData.scalars`) through a
monitor, so the live and the offline diagnosis (`tbprobe check`) agree.

Where findings go while training (`Probe`): `log_change` logs each finding with Python
`logging` (logger `"tbprobe"`, WARNING) once when it appears and once when it clears, and
`add_health` adds the scalar `tbprobe/findings` (their count) to every log and the Markdown
text `tbprobe/health` to the logs where they changed.

Example:
    >>> monitor = FindingsMonitor()
    >>> monitor.update(0, {"conv1": {"dead_units": 0.0}}).appeared
    ()
    >>> [f.rule for f in monitor.update(10, {"conv1": {"dead_units": 1.0}}).appeared]
    ['dead_layer']
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tbprobe import rules
from tbprobe.findings import Checks, Finding
from tbprobe.tags import FINDINGS_TAG, HEALTH_TAG

logger = logging.getLogger("tbprobe")


class RunMemory:
    """What the rules read of a run: first and latest values, call order, non-finite origins.

    Attributes:
        first: `{tag: {metric: (step, value)}}` at each scalar's first log; tags in call order.
        latest: `{tag: {metric: value}}`, each scalar's latest value.
        nonfinite_origin: `(tag, step)`: the first output in call order with `nonfinite` above
            the threshold, at the first step of the current stretch of steps where any output
            had some; None while every output is finite.
        gradient_origin: the same for `gradient_nonfinite`, but the LAST output in call order
            (the first one the backward pass reaches from the loss).
    """

    def __init__(self, nonfinite: float = 0.0):
        self.first: dict[str, dict[str, tuple[int, float]]] = {}
        self.latest: dict[str, dict[str, float]] = {}
        self.nonfinite_origin: tuple[str, int] | None = None
        self.gradient_origin: tuple[str, int] | None = None
        self._nonfinite = nonfinite

    def update(self, step: int, scalars: Mapping[str, Mapping[str, float]]) -> None:
        """Take in one log step's scalars `{tag: {metric: value}}`."""
        for tag, metrics in scalars.items():
            first = self.first.setdefault(tag, {})
            latest = self.latest.setdefault(tag, {})
            for metric, value in metrics.items():
                value = float(value)
                first.setdefault(metric, (step, value))
                latest[metric] = value
        self.nonfinite_origin = self._origin(self.nonfinite_origin, step, scalars, "nonfinite", 0)
        self.gradient_origin = self._origin(
            self.gradient_origin, step, scalars, "gradient_nonfinite", -1
        )

    def _origin(
        self, origin: tuple[str, int] | None, step: int, scalars: Mapping, metric: str, end: int
    ) -> tuple[str, int] | None:
        bad = [
            tag
            for tag in self.latest
            if scalars.get(tag, {}).get(metric, 0.0) > self._nonfinite  # NaN compares False
        ]
        if not bad:
            return None
        return origin or (bad[end], step)


@dataclass(frozen=True)
class FindingsChange:
    """What one `FindingsMonitor.update` changed.

    Attributes:
        step: the step of the update.
        appeared: findings new at this step.
        cleared: findings no longer seen (as they were last seen).
        findings: every finding active after this step.
    """

    step: int
    appeared: tuple[Finding, ...]
    cleared: tuple[Finding, ...]
    findings: tuple[Finding, ...]

    @property
    def changed(self) -> bool:
        """Whether the set of findings changed."""
        return bool(self.appeared or self.cleared)


class FindingsMonitor:
    """Diagnoses a run one log step at a time.

    Args:
        checks: the thresholds; None for the defaults.

    Example:
        >>> monitor = FindingsMonitor()
        >>> change = monitor.update(step, probe.stats())
        >>> for finding in change.appeared:
        ...     print(finding.message)
    """

    def __init__(self, checks: Checks | None = None):
        self.checks = checks or Checks()
        self.memory = RunMemory(self.checks.nonfinite)
        self._active: dict[tuple[str, str], Finding] = {}

    @property
    def findings(self) -> tuple[Finding, ...]:
        """The findings active after the last update."""
        return tuple(self._active.values())

    def update(self, step: int, scalars: Mapping[str, Mapping[str, float]]) -> FindingsChange:
        """Take in the scalars `{tag: {metric: value}}` logged at `step`; say what changed."""
        step = int(step)
        self.memory.update(step, scalars)
        active = {}
        for evidence in rules.evaluate(self.memory, self.checks):
            key = (evidence.rule, evidence.tag)
            before = self._active.get(key)
            active[key] = _finding(evidence, before.first_step if before else step, step)
        appeared = tuple(f for key, f in active.items() if key not in self._active)
        cleared = tuple(f for key, f in self._active.items() if key not in active)
        self._active = active
        return FindingsChange(step, appeared, cleared, self.findings)


def diagnose(
    history: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
    checks: Checks | None = None,
) -> list[Finding]:
    """The findings active at the last step of a logged history.

    Args:
        history: `{tag: {metric: (steps, values)}}`, tags in call order: the shape of
            `tbprobe.events.RunData.scalars`.
        checks: the thresholds; None for the defaults.

    Returns:
        The findings, as a `FindingsMonitor` fed the history step by step would hold them.

    Example:
        >>> diagnose(tbprobe.events.read_run("runs/high_lr").scalars)  # doctest: +SKIP
    """
    steps: dict[int, dict[str, dict[str, float]]] = {}
    for tag, metrics in history.items():
        for metric, (at, values) in metrics.items():
            for step, value in zip(
                np.asarray(at).tolist(), np.asarray(values).tolist(), strict=True
            ):
                steps.setdefault(step, {}).setdefault(tag, {})[metric] = value
    monitor = FindingsMonitor(checks)
    for step in sorted(steps):
        monitor.update(step, steps[step])
    return list(monitor.findings)


def _finding(evidence: rules.Evidence, first_step: int, step: int) -> Finding:
    where = f" in {evidence.tag}" if evidence.tag else ""
    title = rules.TITLES[evidence.rule]
    message = f"{title}{where} since step {first_step}: {evidence.text}. Hint: {evidence.hint}"
    return Finding(
        evidence.rule,
        evidence.tag,
        first_step,
        step,
        evidence.value,
        evidence.threshold,
        evidence.text,
        evidence.hint,
        message,
    )


def log_change(change: FindingsChange) -> None:
    """Log the findings that appeared, and those that cleared: one WARNING per rule.

    A finding is logged once when it appears and once when it clears, never once per step;
    the findings of one rule that appear at the same step share a WARNING (one line each).
    """
    for rule, findings in _by_rule(change.appeared).items():
        if len(findings) == 1:
            logger.warning("%s", findings[0].message)
            continue
        title, first = rules.TITLES[rule], findings[0]
        lines = [f"{title} in {len(findings)} outputs since step {first.first_step}:"]
        lines += [f"  {f.tag}: {f.evidence}" for f in findings]
        lines.append(f"  Hint: {first.hint}")
        logger.warning("%s", "\n".join(lines))
    for rule, findings in _by_rule(change.cleared).items():
        where = ", ".join(f"{f.tag or 'all layers'} (from step {f.first_step})" for f in findings)
        logger.warning("cleared at step %d: %s in %s", change.step, rules.TITLES[rule], where)


def add_health(builder: Any, change: FindingsChange, text: bool) -> None:
    """Add the count `tbprobe/findings` to `builder`, and `tbprobe/health` when `text`.

    Args:
        builder: a `tbprobe.summaries.SummaryBuilder`, reused from step to step.
        change: the log step's `FindingsChange`.
        text: whether to write the Markdown card (else an earlier one is removed).
    """
    builder.scalar(FINDINGS_TAG, float(len(change.findings)))
    if text:
        builder.string(HEALTH_TAG, health_markdown(change))
    else:
        builder.remove(HEALTH_TAG)


def health_markdown(change: FindingsChange) -> str:
    """The `tbprobe/health` card: a Markdown table of the findings after `change`."""
    lines = [f"**{len(change.findings)} finding(s) at step {change.step}**"]
    if change.findings:
        lines += ["", "| rule | layer | since | evidence | hint |", "|---|---|---|---|---|"]
        hinted = set()
        for f in change.findings:
            cells: tuple[str, ...] = (rules.TITLES[f.rule], f"`{f.tag}`" if f.tag else "all layers")
            cells += (
                f"step {f.first_step}",
                f.evidence,
                "as above" if f.hint in hinted else f.hint,
            )
            hinted.add(f.hint)
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if change.cleared:
        cleared = ", ".join(
            f"{rules.TITLES[f.rule]}{f' in `{f.tag}`' if f.tag else ''}" for f in change.cleared
        )
        lines += ["", f"Cleared at this step: {cleared}."]
    return "\n".join(lines)


def _by_rule(findings: tuple[Finding, ...]) -> dict[str, list[Finding]]:
    grouped: dict[str, list[Finding]] = {}
    for finding in findings:
        grouped.setdefault(finding.rule, []).append(finding)
    return grouped
