"""Every code snippet of README.md runs, in order, as a user would run it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tb_helpers import read_events

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def commands(block: str) -> list[str]:
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


@pytest.fixture(scope="module")
def readme_runs(tmp_path_factory):
    """Run the README's Python snippets in one namespace, in a fresh folder."""
    folder = tmp_path_factory.mktemp("readme")
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        for snippet in blocks("python"):
            exec(compile(snippet, "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    return folder, namespace


def test_python_snippets_log_what_they_say(readme_runs, capsys):
    folder, namespace = readme_runs
    quickstart = read_events(folder / "runs/quickstart/probe")
    assert quickstart["conv1/sparsity"]["steps"] == [0, 16, 32]
    assert {"conv1/feature_maps", "flatten/heatmap", "logits/activations"} <= set(quickstart)
    custom = read_events(folder / "runs/custom_loop/probe")
    assert custom["pool/dead_units"]["steps"] == [4, 8, 12, 16]
    assert set(namespace["activations"]) == {"conv1", "logits"}
    grads = read_events(folder / "runs/grads/probe")
    assert grads["logits/gradient_rms"]["steps"] == [32, 48]  # train begin, epoch end
    assert grads["conv1/update_ratio"]["steps"] == [32]


def test_python_snippets_print_what_they_compute(readme_runs):
    _, namespace = readme_runs
    tags = [
        out.tag
        for out in namespace["tbprobe"].select_layers(
            namespace["model"], ["conv*", namespace["keras"].layers.Dense]
        )
    ]
    assert tags == ["conv1", "logits"]
    assert tuple(namespace["activations"]["conv1"].shape) == (4, 26, 26, 8)
    assert namespace["probe"].probe_model.probed_model is namespace["model"]
    assert namespace["probe"].findings() == []  # the Diagnosis snippet's probe, as it prints


def test_comparing_runs_commands(readme_runs, tmp_path):
    folder, _ = readme_runs
    work = tmp_path / "work"
    shutil.copytree(folder / "runs", work / "runs")
    # The README names two runs of the demo; give it two real runs under those names.
    shutil.copytree(work / "runs/quickstart", work / "runs/baseline")
    shutil.copytree(work / "runs/custom_loop", work / "runs/high_lr")
    (block,) = [b for b in blocks("bash") if "tbprobe launch" in b]
    for command in commands(block):
        argv = [str(BIN / "tbprobe"), *command.split()[1:]]
        if command.startswith("tbprobe report"):
            done = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stderr
            assert (work / "report/index.html").exists()
            continue
        process = subprocess.Popen(
            argv, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            lines = []
            for line in process.stdout:
                lines.append(line)
                if "http://" in line:
                    break
            assert any("http://localhost:" in line for line in lines), "".join(lines)
        finally:
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=60)
        assert process.returncode == 0


def test_setup_commands_exist_and_run():
    (block,) = [b for b in blocks("bash") if "scripts/test.py" in b]
    assert commands(block) == ["python3 scripts/demo.py", "python3 scripts/test.py"]
    # The test command itself is what runs this suite; here it only collects, through the same
    # set-up path (the demo command runs in tests/test_demo.py).
    done = subprocess.run(
        [sys.executable, "scripts/test.py", "--collect-only", "-q", "tests/test_selection.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "test_layer_paths_recurse_and_skip_inputs" in done.stdout
