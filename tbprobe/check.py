"""`tbprobe check RUN...`: diagnose finished or running runs offline, without TensorFlow.

Each run's logged scalars are replayed through the diagnosis rules (`tbprobe.monitor.diagnose`,
the same rules `Probe` applies while training) and the findings active at its last step are
printed per run, or written as JSON with `--json`. Exit status: 1 when any run has a finding,
0 when none has, 2 for a path that holds no run.

Example:
    $ tbprobe check runs/
    baseline (runs/baseline, steps 0-282): no finding
    high_lr (runs/high_lr, steps 0-282): 8 findings
      dead layer in conv1 since step 47: 100% of its units output 0 ...
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from tbprobe.events import read_run
from tbprobe.findings import Checks, Finding
from tbprobe.monitor import diagnose
from tbprobe.runs import PROBE_RUNS, RunArgumentLike, named_runs


@dataclass(frozen=True)
class RunFindings:
    """The diagnosis of one run.

    Attributes:
        name: the run's name, as `tbprobe launch` names it.
        path: the run folder.
        steps: the first and last logged steps, or None for a run without data yet.
        findings: the findings active at the last step.
    """

    name: str
    path: Path
    steps: tuple[int, int] | None
    findings: tuple[Finding, ...]


def check_runs(*runs: RunArgumentLike, checks: Checks | None = None) -> list[RunFindings]:
    """Diagnose every run the arguments point at.

    Args:
        *runs: run folders, folders of runs, `NAME=PATH` strings or `{name: path}` mappings,
            as `tbprobe launch` takes them.
        checks: the thresholds; None for the defaults.

    Returns:
        One `RunFindings` per run, in the order given.

    Raises:
        ValueError: a path that does not exist or holds no run.

    Example:
        >>> [len(r.findings) for r in check_runs("runs/")]  # doctest: +SKIP
        [0, 8]
    """
    results = []
    for name, path in named_runs(*runs, layout=PROBE_RUNS):
        run = read_run(path, name)
        ends = [
            int(at)
            for metrics in run.scalars.values()
            for steps, _ in metrics.values()
            for at in steps[:1].tolist() + steps[-1:].tolist()
        ]
        span = (min(ends), max(ends)) if ends else None
        results.append(RunFindings(name, path, span, tuple(diagnose(run.scalars, checks))))
    return results


def findings_text(result: RunFindings) -> str:
    """One run's findings as lines of text, the run's name and steps first."""
    span = f", steps {result.steps[0]}-{result.steps[1]}" if result.steps else ", no data yet"
    head = f"{result.name} ({os.fspath(result.path)}{span}): "
    if not result.findings:
        return head + "no finding"
    lines = [head + f"{len(result.findings)} finding(s)"]
    lines += [f"  {finding.message}" for finding in result.findings]
    return "\n".join(lines)


def findings_json(result: RunFindings) -> dict:
    """One run's findings as a JSON-ready dict."""
    return {
        "run": result.name,
        "path": os.fspath(result.path),
        "steps": list(result.steps) if result.steps else None,
        "findings": [dataclasses.asdict(finding) for finding in result.findings],
    }
