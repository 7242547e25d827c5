"""`tbprobe check`: findings of logged runs, offline, exit codes and JSON; and in the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tbprobe.check import check_runs
from tbprobe.cli import main
from tbprobe.report import write_report

# run -> {tag: values at steps 0, 10, 20}; `sick` has dead conv layers from step 10.
RUNS = {
    "healthy": {
        "conv1/dead_units": (0.0, 0.1, 0.1),
        "conv2/dead_units": (0.0, 0.0, 0.2),
        "tbprobe/findings": (0.0, 0.0, 0.0),
    },
    "sick": {
        "conv1/dead_units": (0.0, 1.0, 1.0),
        "conv2/dead_units": (0.05, 0.95, 1.0),
        "dense/dead_units": (0.0, 0.0, 0.0),
        "tbprobe/findings": (0.0, 2.0, 2.0),
    },
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """`runs/healthy` and `runs/sick`, scalars written by TensorFlow's summary writer."""
    import tensorflow as tf

    root = tmp_path_factory.mktemp("check") / "runs"
    for name, scalars in RUNS.items():
        writer = tf.summary.create_file_writer(str(root / name / "probe"))
        with writer.as_default():
            for i in range(3):
                for tag, values in scalars.items():
                    tf.summary.scalar(tag, values[i], step=10 * i)
        writer.close()
    return root


def test_check_runs_names_the_dead_layers_since_the_step_they_died(runs):
    healthy, sick = check_runs(runs)
    assert (healthy.name, healthy.steps, healthy.findings) == ("healthy", (0, 20), ())
    assert [(f.rule, f.tag, f.first_step, f.value) for f in sick.findings] == [
        ("dead_layer", "conv1", 10, 1.0),
        ("dead_layer", "conv2", 10, 1.0),
    ]


def test_exit_1_when_a_run_has_a_finding(runs, capsys):
    assert main(["check", str(runs)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"healthy ({runs / 'healthy'}, steps 0-20): no finding"
    assert lines[1] == f"sick ({runs / 'sick'}, steps 0-20): 2 finding(s)"
    assert [line.split(" since ")[0] for line in lines[2:]] == [
        "  dead layer in conv1",
        "  dead layer in conv2",
    ]


def test_exit_0_without_finding_and_json(runs, capsys):
    assert main(["check", "--json", f"ok={runs / 'healthy'}"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result == {"run": "ok", "path": str(runs / "healthy"), "steps": [0, 20], "findings": []}


def test_json_findings_carry_every_field(runs, capsys):
    assert main(["check", "--json", str(runs / "sick")]) == 1
    (result,) = json.loads(capsys.readouterr().out)
    conv1 = result["findings"][0]
    assert {k: conv1[k] for k in ("rule", "tag", "first_step", "last_step", "threshold")} == {
        "rule": "dead_layer",
        "tag": "conv1",
        "first_step": 10,
        "last_step": 20,
        "threshold": 0.9,
    }
    assert conv1["message"].startswith("dead layer in conv1 since step 10: 100%")


def test_exit_2_for_a_bad_path(tmp_path, capsys):
    assert main(["check", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_check_does_not_import_tensorflow(runs):
    code = (
        "import sys; from tbprobe.cli import main; code = main(['check', sys.argv[1]]); "
        "print(code, sorted({'tensorflow', 'keras'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(runs)], capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines()[-1] == "1 []"


def test_report_lists_each_runs_findings_at_the_top(runs, tmp_path):
    page = write_report([runs], tmp_path).read_text()
    top = page[page.index("<h2>Findings</h2>") : page.index("<h2>Runs</h2>")]
    assert "<b>healthy</b>: no finding" in top
    assert top.count('class="finding"') == 2 and "dead layer in conv1 since step 10" in top
    assert "tbprobe" not in page[page.index("<h2>Last values</h2>") :].replace("tbprobe report", "")
