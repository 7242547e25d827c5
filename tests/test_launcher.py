"""Tests of `tbprobe.launcher`: real TensorBoard processes serving runs written by `tbprobe.Probe`."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import tb_helpers
from tb_helpers import (
    LAYERS,
    eventually,
    group_gone,
    live_group_members,
    process_state,
    served_runs,
    served_tags,
    written_scalars,
    written_tags,
)

import tbprobe
from tbprobe import cli
from tbprobe.launcher import parse_samples_per_plugin
from tbprobe.runs import RUN_FOLDERS
from tbprobe.tensorboard_process import DEFAULT_PORT, PORT_SEARCH_SPAN

ROOT = Path(__file__).resolve().parent.parent
HEALTH_SCALARS = ("sparsity", "dead_units", "mean", "std", "nonfinite")
BASELINE_RUNS = {"baseline/probe", "baseline/train", "baseline/validation"}
ALL_RUNS = {*BASELINE_RUNS, "high_lr/probe"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tb_helpers.make_runs(tmp_path_factory.getbasetemp() / "tbprobe-runs")


def launch_dirs() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("tbprobe-launch-")}


def expected_tags(runs: dict[str, Path], plugin: str) -> dict[str, set[str]]:
    """TensorBoard run -> tags of `plugin`, read from the event files themselves."""
    expected = {}
    for name, run in runs.items():
        for folder in RUN_FOLDERS:
            tags = written_tags(run / folder).get(plugin) if (run / folder).is_dir() else None
            if tags:
                expected[f"{name}/{folder}"] = tags
    return expected


@pytest.mark.parametrize(
    "module", ["tbprobe.launcher", "tbprobe.runs", "tbprobe.report", "tbprobe.cli"]
)
def test_importing_launcher_modules_does_not_import_tensorflow(module) -> None:
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'matplotlib') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"


def test_launch_is_the_function_after_importing_the_launcher_module() -> None:
    # The module was once named `tbprobe.launch`, like the function: importing it first bound
    # `tbprobe.launch` to the module ("'module' object is not callable").
    code = (
        "import tbprobe.launcher, tbprobe.cli, tbprobe; "
        "print(tbprobe.launch is tbprobe.launcher.launch, callable(tbprobe.launch), "
        "tbprobe.TensorBoardHandle is tbprobe.launcher.TensorBoardHandle)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.split() == ["True", "True", "True"]


def test_named_runs_are_served_with_every_tag_and_stop_leaves_nothing(runs):
    before = launch_dirs()
    handle = tbprobe.launch({"baseline": runs["baseline"]}, f"high_lr={runs['high_lr']}")
    try:
        assert handle.links == {name: path.resolve() for name, path in runs.items()}
        assert {p.name: os.readlink(p) for p in handle.logdir.iterdir()} == {
            name: str(path.resolve()) for name, path in runs.items()
        }
        assert served_runs(handle.url, ALL_RUNS) == ALL_RUNS
        served = {}
        for plugin in ("scalars", "histograms", "images"):
            expected = expected_tags(runs, plugin)
            served[plugin] = served_tags(handle.url, plugin, expected)
            assert served[plugin] == expected
        for run in ("baseline/probe", "high_lr/probe"):
            for layer in LAYERS:
                assert {f"{layer}/{name}" for name in HEALTH_SCALARS} <= served["scalars"][run]
                assert f"{layer}/activations" in served["histograms"][run]
            assert "conv1/feature_maps" in served["images"][run]
        assert "epoch_loss" in served["scalars"]["baseline/train"]

        series = tb_helpers.get_json(
            handle.url, "/data/plugin/scalars/scalars", run="high_lr/probe", tag="conv1/mean"
        )
        # Two event files (two Probes, like two fit() calls): TensorBoard must read both.
        assert len(list((runs["high_lr"] / "probe").glob("*tfevents*"))) == 2
        written = written_scalars(runs["high_lr"] / "probe", "conv1/mean")
        assert [step for step, _ in written] == [0, 1, 2]
        assert [(step, value) for _, step, value in series] == written

        # TensorBoard and the Rust data server of --load_fast, which follows the symlinks.
        members = live_group_members(handle.pid)
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in members]
        assert handle.pid in members
        assert any(b"tensorboard_data_server" in command for command in commands), commands
    finally:
        handle.stop()
    assert not handle.running
    assert process_state(handle.pid) is None
    assert group_gone(handle.pid)
    assert not handle.logdir.exists()
    assert launch_dirs() <= before
    assert written_tags(runs["high_lr"] / "probe")  # the runs behind the symlinks are intact
    handle.stop()  # a second stop does nothing
    assert "TensorBoard 2." in handle.output()


def test_python_loader_follows_the_symlinks_too(runs):
    # Where the Rust data server is unavailable, TensorBoard falls back to its Python loader.
    named = {"baseline": runs["baseline"], "high_lr": runs["high_lr"]}
    with tbprobe.launch(named, tensorboard_args=["--load_fast=false"]) as handle:
        commands = [
            Path(f"/proc/{pid}/cmdline").read_bytes() for pid in live_group_members(handle.pid)
        ]
        assert not any(b"tensorboard_data_server" in command for command in commands)
        assert served_runs(handle.url, ALL_RUNS) == ALL_RUNS
        expected = expected_tags(runs, "histograms")
        assert served_tags(handle.url, "histograms", expected) == expected


def test_single_run_shows_under_its_folder_name(runs):
    with tbprobe.launch(runs["baseline"]) as handle:
        assert handle.links == {"baseline": runs["baseline"].resolve()}
        assert served_runs(handle.url, BASELINE_RUNS) == BASELINE_RUNS
    assert not handle.running
    assert not handle.logdir.exists()


def test_folder_of_runs_is_served_as_it_is_and_shows_new_runs(runs, tmp_path):
    folder = tmp_path / "runs"
    for name, run in runs.items():
        shutil.copytree(run, folder / name)
    with tbprobe.launch(folder, tensorboard_args=["--reload_interval=1"]) as handle:
        assert handle.logdir == folder.resolve()
        assert handle.links == {}
        assert served_runs(handle.url, ALL_RUNS) == ALL_RUNS
        shutil.copytree(runs["high_lr"], folder / "late")
        assert served_runs(handle.url, ALL_RUNS | {"late/probe"}) == ALL_RUNS | {"late/probe"}
    assert not handle.running
    assert sorted(p.name for p in folder.iterdir()) == ["baseline", "high_lr", "late"]


@pytest.mark.parametrize(("samples_per_plugin", "kept"), [(None, 12), ("images=5", 5)])
def test_image_steps_kept_follow_samples_per_plugin(tmp_path_factory, samples_per_plugin, kept):
    # TensorBoard alone keeps 10 image steps per tag; tbprobe's default keeps up to 100.
    run = tb_helpers.make_long_run(tmp_path_factory.getbasetemp() / "long", steps=12)
    with tbprobe.launch(run, samples_per_plugin=samples_per_plugin) as handle:
        query = {"run": "long/probe", "tag": "conv1/feature_maps", "sample": "0"}
        steps = eventually(
            lambda: [
                image["step"]
                for image in tb_helpers.get_json(handle.url, "/data/plugin/images/images", **query)
            ],
            lambda steps: len(steps) >= kept,
        )
    assert len(steps) == kept
    assert len(set(steps)) == kept
    assert set(steps) <= set(range(12))
    assert 11 in steps  # the newest step is always kept


def test_busy_default_port_falls_back_to_the_next_free_one(runs):
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):  # if it fails, another program already holds it
            blocker.bind(("127.0.0.1", DEFAULT_PORT))
            blocker.listen()
        with tbprobe.launch(runs["high_lr"]) as handle:
            assert DEFAULT_PORT < handle.port < DEFAULT_PORT + PORT_SEARCH_SPAN
            assert handle.url == f"http://localhost:{handle.port}/"
            assert served_runs(handle.url, {"high_lr/probe"}) == {"high_lr/probe"}


def test_cli_busy_explicit_port_is_an_error(runs, capsys):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        code = cli.main(["launch", str(runs["high_lr"]), "--port", str(port)])
    assert code == 2
    captured = capsys.readouterr()
    assert f"Port {port} on localhost is already in use" in captured.err
    assert captured.out == ""


def _same_folder_name_twice(runs: dict[str, Path], tmp: Path) -> list[str]:
    for parent in ("one", "two"):
        shutil.copytree(runs["high_lr"], tmp / parent / "run")
    return [str(tmp / "one" / "run"), str(tmp / "two" / "run")]


def _file(tmp: Path) -> list[str]:
    (tmp / "notes.txt").write_text("not a run")
    return [str(tmp / "notes.txt")]


def _folder_without_events(tmp: Path) -> list[str]:
    (tmp / "empty" / "probe").mkdir(parents=True)
    (tmp / "empty" / "probe" / "notes.txt").write_text("no events here")
    return [str(tmp / "empty")]


ERROR_CASES: dict[str, tuple[Callable[[dict[str, Path], Path], list[str]], list[str]]] = {
    "missing path": (
        lambda runs, tmp: [str(tmp / "nope")],
        ["Run path '{tmp}/nope' does not exist", "Expected a run directory"],
    ),
    "named missing path": (
        lambda runs, tmp: [f"lr={tmp}/nope"],
        ["Run path '{tmp}/nope' (from 'lr={tmp}/nope') does not exist"],
    ),
    "file": (lambda runs, tmp: _file(tmp), ["'{tmp}/notes.txt' is not a directory"]),
    "no event files": (
        lambda runs, tmp: _folder_without_events(tmp),
        ["No TensorBoard event files (events.out.tfevents.*) below '{tmp}/empty'"],
    ),
    "empty name": (
        lambda runs, tmp: [f"={runs['high_lr']}"],
        ["Invalid run name '' in '={high_lr}'", "non-empty NAME"],
    ),
    "name with slash": (
        lambda runs, tmp: [f"a/b={runs['high_lr']}"],
        ["Invalid run name 'a/b' in 'a/b={high_lr}'", "without '/'"],
    ),
    "duplicate names": (
        lambda runs, tmp: [f"x={runs['high_lr']}", f"x={runs['baseline']}"],
        ["Run name 'x' is given twice (again by 'x={baseline}')"],
    ),
    "duplicate folder names": (
        _same_folder_name_twice,
        ["Run name 'run' is given twice (again by '{tmp}/two/run')", "name the runs"],
    ),
    "remote path": (
        lambda runs, tmp: ["gs://bucket/run"],
        ["'gs://bucket/run' is not a local directory"],
    ),
    "samples per plugin": (
        lambda runs, tmp: [str(runs["high_lr"]), "--samples-per-plugin", "images=lots"],
        ["Invalid samples_per_plugin. Received: 'images=lots'"],
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_cli_rejects_bad_runs_with_a_message_naming_them(case, runs, tmp_path, capsys):
    make_argv, messages = ERROR_CASES[case]
    argv = make_argv(runs, tmp_path)
    assert cli.main(["launch", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("tbprobe launch: error: ")
    for message in messages:
        assert message.format(tmp=tmp_path, **runs) in captured.err


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (None, {}),
        ("images=200, histograms=0", {"images": 200, "histograms": 0}),
        ({"images": 5}, {"images": 5}),
    ],
)
def test_parse_samples_per_plugin(value, parsed):
    assert parse_samples_per_plugin(value) == parsed


@pytest.mark.parametrize("value", ["images", "images=-1", "=3", "images=1.5", {"images": True}])
def test_parse_samples_per_plugin_rejects(value):
    with pytest.raises(ValueError, match=re.escape(f"Received: {value!r}")):
        parse_samples_per_plugin(value)


def test_tensorboard_exiting_at_start_is_reported_with_its_output(runs, capsys):
    before = launch_dirs()
    with pytest.raises(RuntimeError, match=r"(?s)TensorBoard exited with code \d+ .*no_such_flag"):
        tbprobe.launch(runs["high_lr"], tensorboard_args=["--no_such_flag"])
    argv = ["launch", str(runs["high_lr"]), "--tensorboard-args=--no_such_flag"]
    assert cli.main(argv) == 1
    assert "no_such_flag" in capsys.readouterr().err
    assert launch_dirs() <= before


@pytest.mark.parametrize(
    ("entry", "signum"),
    [
        (["-m", "tbprobe.cli", "launch"], signal.SIGINT),
        ([str(ROOT / "scripts" / "launch_tensorboard")], signal.SIGTERM),
    ],
    ids=["cli-sigint", "script-sigterm"],
)
def test_launcher_process_stops_tensorboard_on_signal(runs, entry, signum):
    argv = [f"baseline={runs['baseline']}", f"high_lr={runs['high_lr']}"]
    command = [sys.executable, *entry, *argv]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "stdin": subprocess.DEVNULL}
    with subprocess.Popen(command, text=True, cwd=ROOT, **pipes) as launcher:
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(x) for x in launcher.stdout])
        reader.start()
        tensorboard_pid = None
        try:
            banner = lines.get(timeout=180)
            found = re.fullmatch(r"TensorBoard at (\S+) \(pid (\d+)\); Ctrl-C stops it\n", banner)
            assert found, banner
            url, tab = found[1].split("#")
            tensorboard_pid = int(found[2])
            assert tab == "tbprobe"  # the banner opens the tbprobe dashboard
            listing = [lines.get(timeout=30) for _ in range(3)]
            assert listing[:2] == [f"  {name}: {path.resolve()}\n" for name, path in runs.items()]
            logdir = Path(listing[2].removeprefix("  logdir: ").strip())
            assert sorted(p.name for p in logdir.iterdir()) == ["baseline", "high_lr"]
            assert served_runs(url, ALL_RUNS) == ALL_RUNS
            launcher.send_signal(signum)
            code = launcher.wait(timeout=60)
        finally:
            if launcher.poll() is None:
                launcher.kill()
            if tensorboard_pid is not None and not group_gone(tensorboard_pid, timeout=5):
                os.killpg(tensorboard_pid, signal.SIGKILL)
            reader.join(timeout=30)
        stderr = launcher.stderr.read()
    assert code == 0, stderr
    assert "tbprobe launch: TensorBoard stopped" in stderr
    assert process_state(tensorboard_pid) is None
    assert group_gone(tensorboard_pid)
    assert not logdir.exists()
