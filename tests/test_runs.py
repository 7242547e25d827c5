"""tbprobe.runs: run arguments, run discovery and run names of `tbprobe launch` and `report`.

Only event file names matter here, so runs are folders of empty `events.out.tfevents.*` files;
the launcher and report tests read real runs written by tbprobe.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tbprobe.runs import (
    PROBE_RUNS,
    TENSORBOARD_RUNS,
    LogdirPlan,
    event_files,
    find_runs,
    link_runs,
    named_runs,
    parse_run_arguments,
    resolve_logdir,
)


def fake_run(run: Path, folders=("probe",), stamps=(1700000000,)) -> Path:
    """`run` with one empty event file per stamp in each of `folders` ("" for `run` itself)."""
    for folder in folders:
        (run / folder).mkdir(parents=True, exist_ok=True)
        for stamp in stamps:
            (run / folder / f"events.out.tfevents.{stamp}.host.1.0.v2").touch()
    return run


@pytest.fixture
def launcher_runs(tmp_path) -> dict[str, Path]:
    """As `tb_helpers.make_runs`: `baseline` with probe/, train/ and validation/, `high_lr`."""
    root = tmp_path / "tbprobe-runs"
    return {
        "baseline": fake_run(root / "baseline", ("probe", "train", "validation")),
        "high_lr": fake_run(root / "high_lr"),
    }


@pytest.fixture
def report_runs(tmp_path) -> Path:
    """`runs/a` (with Keras's empty `train/`, not a run) and `runs/sweep/lr1`."""
    runs = tmp_path / "runs"
    fake_run(runs / "a")
    fake_run(runs / "sweep" / "lr1")
    (runs / "a" / "train").mkdir()
    return runs


def test_resolve_logdir_names_runs_by_argument_kind(launcher_runs, tmp_path):
    runs = launcher_runs
    folder = runs["baseline"].parent.resolve()
    baseline, high_lr = runs["baseline"].resolve(), runs["high_lr"].resolve()
    assert resolve_logdir(folder) == LogdirPlan(folder=folder, links={})
    assert resolve_logdir(str(runs["baseline"]) + "/").links == {"baseline": baseline}
    assert resolve_logdir(runs["baseline"] / "probe").links == {"probe": baseline / "probe"}
    both = {"tbprobe-runs": folder, "high_lr": high_lr}
    assert resolve_logdir(folder, high_lr) == LogdirPlan(folder=None, links=both)
    assert resolve_logdir(f"a={baseline}", {"b": high_lr}).links == {"a": baseline, "b": high_lr}
    assert resolve_logdir({"all": folder}).links == {"all": folder}
    with_equals = tmp_path / "lr=0.1"
    shutil.copytree(runs["high_lr"], with_equals)
    assert resolve_logdir(with_equals).links == {"lr=0.1": with_equals.resolve()}
    with pytest.raises(ValueError, match="No run given"):
        resolve_logdir()
    with pytest.raises(TypeError, match="Received: 3 of type int"):
        resolve_logdir(3)  # type: ignore[arg-type]


def test_find_and_name_runs_like_the_launcher(report_runs):
    runs = report_runs

    assert find_runs(runs) == [runs / "a", runs / "sweep" / "lr1"]
    assert find_runs(runs / "a" / "probe") == [runs / "a"]
    assert named_runs(runs) == [("a", runs / "a"), ("sweep/lr1", runs / "sweep" / "lr1")]
    # An unnamed folder given with other arguments is linked under its own name.
    assert named_runs(f"base={runs / 'a'}", runs / "sweep") == [
        ("base", runs / "a"),
        ("sweep/lr1", runs / "sweep" / "lr1"),
    ]
    assert named_runs(f"all={runs}")[1] == ("all/sweep/lr1", runs / "sweep" / "lr1")
    assert named_runs({"x": runs / "a" / "probe"}) == [("x", runs / "a")]
    assert named_runs(runs / "a" / "probe") == [("a", runs / "a")]


def tensorboard_names(*arguments, tmp: Path) -> set[str]:
    """The runs TensorBoard lists when started by the launcher: every folder holding event files
    below its --logdir (the symlink folder, or the folder of runs), by relative path."""
    plan = resolve_logdir(*arguments)
    logdir = plan.folder or link_runs(tmp / "logdir", plan.links)
    names = set()
    for folder, _, files in os.walk(logdir, followlinks=True):
        if any("tfevents" in name for name in files):
            names.add(Path(folder).relative_to(logdir).as_posix())
    shutil.rmtree(tmp / "logdir", ignore_errors=True)
    return names


@pytest.mark.parametrize(
    "arguments",
    [
        ["{runs}"],
        ["{runs}/a"],
        ["{runs}/a", "{runs}/sweep/lr1"],
        ["base={runs}/a", "{runs}/sweep"],
        ["all={runs}"],
        ["{runs}", "other={runs}/sweep/lr1"],
    ],
)
def test_report_names_are_the_launchers_probe_runs(report_runs, tmp_path, arguments):
    fake_run(report_runs / "sweep" / "lr1", ("train",))
    arguments = [a.format(runs=report_runs) for a in arguments]

    names = {f"{name}/probe" for name, _ in named_runs(*arguments)}

    shown = tensorboard_names(*arguments, tmp=tmp_path)
    assert names == {name for name in shown if name.endswith("/probe")}


def test_what_counts_as_a_run_is_the_layouts(tmp_path):
    fake_run(tmp_path / "keras", ("train",))
    fake_run(tmp_path / "flat", ("",))
    probe = fake_run(tmp_path / "tbprobe")

    assert find_runs(tmp_path, TENSORBOARD_RUNS) == [
        tmp_path / "flat",
        tmp_path / "keras",
        tmp_path / "keras" / "train",
        tmp_path / "tbprobe",
        tmp_path / "tbprobe" / "probe",
    ]
    assert find_runs(tmp_path, PROBE_RUNS) == [probe]
    # The launcher shows a run's probe/ folder itself; the report reads the run it belongs to.
    assert parse_run_arguments(probe / "probe", layout=TENSORBOARD_RUNS)[0].path == probe / "probe"
    assert parse_run_arguments(probe / "probe", layout=PROBE_RUNS)[0].path == probe
    with pytest.raises(ValueError, match=r"No tbprobe data at or below '.*keras'\. Expected a"):
        named_runs(tmp_path / "keras")


def test_event_files_are_oldest_first_and_only_files(tmp_path):
    folder = fake_run(tmp_path, stamps=(1700000010, 1700000002, 1700000100)) / "probe"
    (folder / "events.out.tfevents.dir").mkdir()
    (folder / "notes.txt").touch()

    assert [f.name.split(".")[3] for f in event_files(folder)] == [
        "1700000002",
        "1700000010",
        "1700000100",
    ]
    assert event_files(tmp_path / "missing") == []


def test_event_files_of_one_second_are_in_writer_order(tmp_path):
    """Writers 9 and 10 of a process (two fits), created within one second."""
    names = [f"events.out.tfevents.1700000000.vm.example.org.4242.{n}.v2" for n in (10, 9, 2)]
    for name in names:
        (tmp_path / name).touch()

    assert [f.name.split(".")[-2] for f in event_files(tmp_path)] == ["2", "9", "10"]


def test_symlink_loops_end(report_runs):
    (report_runs / "sweep" / "loop").symlink_to(report_runs, target_is_directory=True)

    assert find_runs(report_runs) == [report_runs / "a", report_runs / "sweep" / "lr1"]


def test_link_runs_makes_one_symlink_per_name(report_runs, tmp_path):
    links = {"base": (report_runs / "a").resolve(), "lr1": (report_runs / "sweep").resolve()}

    logdir = link_runs(tmp_path / "logdir", links)

    assert {p.name: Path(os.readlink(p)) for p in logdir.iterdir()} == links


def test_missing_path_bad_names_and_duplicate_names_raise(report_runs, tmp_path):
    with pytest.raises(ValueError, match=r"'.*nowhere' does not exist\. Expected a run folder"):
        find_runs(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"Invalid run name 'a/b'"):
        named_runs("a/b=somewhere")
    with pytest.raises(ValueError, match=r"Empty run path in 'x='"):
        named_runs("x=")
    with pytest.raises(ValueError, match=r"'gs://bucket/run' is not a local directory"):
        named_runs("gs://bucket/run")
    fake_run(tmp_path / "one" / "x")
    fake_run(tmp_path / "two" / "x")
    with pytest.raises(ValueError, match=r"Run name 'x' is given twice"):
        named_runs(tmp_path / "one" / "x", tmp_path / "two" / "x")
    with pytest.raises(ValueError, match=r"Run name 'a' is given twice \(again by 'a=.*one'\)"):
        named_runs(report_runs / "a", {"a": tmp_path / "one"})
