"""tbprobe.report: the static HTML/PNG comparison report and the `tbprobe report` command."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tb_helpers

from tbprobe.cli import main
from tbprobe.events import RunData, read_run
from tbprobe.figures import telling_layers
from tbprobe.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROWS = np.array([[-1.0, 0.0, 3.0], [0.0, 1.0, 5.0]])
# run -> {tag: values at steps 0, 1, ...}; run b stops a step earlier and has no conv2.
LOGS = {
    "a": {
        "conv1/dead_units": (0.0, 0.0, 0.25),
        "conv1/nonfinite": (0.0, 0.0, 0.0),
        "conv1/mean": (0.5, 0.25, 0.125),
        "conv2/dead_units": (0.25, 0.5, 0.75),
        "conv2/nonfinite": (0.0, 0.0, 0.0),
        "conv2/mean": (0.5, 0.5, 0.5),
    },
    "b": {
        "conv1/dead_units": (0.0, 0.0),
        "conv1/nonfinite": (0.0, 0.125),
        "conv1/mean": (1.0, 2.0),
    },
}


def write_run(run: Path, scalars: dict[str, tuple[float, ...]]) -> None:
    """Write `scalars` at steps 0, 1, ... and the histogram ROWS (scaled by the step) of each
    layer into `run/probe/`, as tbprobe's writer tags them."""
    import tensorflow as tf
    from tensorboard.plugins.histogram import metadata

    layers = dict.fromkeys(tag.rpartition("/")[0] for tag in scalars)
    writer = tf.summary.create_file_writer(str(run / "probe"))
    with writer.as_default():
        for step in range(len(next(iter(scalars.values())))):
            for layer in layers:
                rows = ROWS * [1.0, 1.0, step + 1]
                meta = metadata.create_summary_metadata("", "")
                tf.summary.write(f"{layer}/activations", rows, step=step, metadata=meta)
            for tag, values in scalars.items():
                tf.summary.scalar(tag, values[step], step=step)
    writer.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """`runs/a` and `runs/b` of LOGS, written once; `runs/a` also has Keras's `train/`."""
    root = tmp_path_factory.mktemp("report") / "runs"
    for name, scalars in LOGS.items():
        write_run(root / name, scalars)
    (root / "a" / "train").mkdir()
    return root


def table_rows(page: str) -> dict[str, tuple[bool, str]]:
    """layer -> (row flagged?, the row's cells as HTML)."""
    pattern = (
        r'<tr( class="flagged")?><td class="layer"><a href="#layer-\d+">([^<]+)</a></td>(.*?)</tr>'
    )
    return {name: (bool(flag), cells) for flag, name, cells in re.findall(pattern, page)}


def test_report_shows_every_figure_and_flags_dead_and_nonfinite_layers(runs, tmp_path):
    index = write_report({"base": runs / "a", "other": runs / "b"}, tmp_path / "out")

    assert index == tmp_path / "out" / "index.html"
    page = index.read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(sources) == [
        "figures/hist-000-conv1.png",
        "figures/hist-001-conv2.png",
        "figures/metric-dead_units.png",
        "figures/metric-mean.png",
        "figures/metric-nonfinite.png",
    ]
    for source in sources:
        assert (index.parent / source).read_bytes()[:8] == PNG_MAGIC
    # sparsity and std were never logged; no figure, a sentence instead.
    assert "No run logged sparsity." in page and "No run logged std." in page

    rows = table_rows(page)
    assert set(rows) == {"conv1", "conv2"}
    flagged, cells = rows["conv2"]
    assert flagged
    assert '<td class="dead" title="step 2">0.75</td>' in cells
    # Run `base` logged neither sparsity nor std for conv2; run `other` has no conv2 at all.
    assert cells.count('class="missing"') == 2 + 5
    flagged, cells = rows["conv1"]
    assert flagged and 'class="dead"' not in cells
    assert '<td class="nonfinite" title="step 1">0.125</td>' in cells
    assert "conv2 (dead in base)" in page and "conv1 (nonfinite in other)" in page
    # The histogram caption says which run lacks the layer; the legend shows the step.
    assert "<figcaption>other: not logged</figcaption>" in page


def test_dead_threshold_is_configurable(runs, tmp_path):
    page = write_report([runs], tmp_path / "out", dead_threshold=0.8).read_text()

    assert 'class="dead"' not in page
    assert not table_rows(page)["conv2"][0]
    assert "dead_units &ge; 0.8" in page
    # A parent folder means every run below it, named by its relative path.
    assert '<th colspan="5">a</th><th colspan="5">b</th>' in page


def test_partial_runs_truncated_file_is_reported(runs, tmp_path):
    shutil.copytree(runs / "a", tmp_path / "crashed")
    file = next((tmp_path / "crashed" / "probe").iterdir())
    file.write_bytes(file.read_bytes()[:-10])

    page = write_report([tmp_path / "crashed", runs / "b"], tmp_path / "out").read_text()

    assert 'class="problem"' in page and "truncated after byte" in page
    # The last record (conv2/mean at step 2) is gone: its last value is step 1's.
    cells = table_rows(page)["conv2"][1]
    assert '<td title="step 1">0.5</td>' in cells


def test_many_layers_color_the_telling_ones_and_say_so(tmp_path):
    steps = np.arange(3)
    layers = [f"block{i}/conv" for i in range(30)]
    dead = {la: (steps, np.array([0.0, 0.0, i / 100])) for i, la in enumerate(layers)}
    scalars = {
        la: {"dead_units": dead[la], "mean": (steps, np.array([0.0, 1.0, 0.0]))} for la in layers
    }
    scalars["block3/conv"]["mean"] = (steps, np.array([0.0, 5.0, 0.0]))
    run = RunData("r", tmp_path, scalars, {})

    assert telling_layers([run], "dead_units", layers, 3) == layers[-3:]
    assert telling_layers([run], "mean", layers, 2) == ["block0/conv", "block3/conv"]
    page = write_report([run], tmp_path / "out", max_layers=3, metrics=["dead_units"]).read_text()
    assert (
        "3 of 30 layers in color (the highest last value in any run); the other 27 in gray." in page
    )


def test_invalid_arguments_raise_with_the_value_received(runs, tmp_path):
    with pytest.raises(
        ValueError, match=r"`dead_threshold`\. Received: 1\.5\. Expected a fraction"
    ):
        write_report([runs], tmp_path, dead_threshold=1.5)
    with pytest.raises(ValueError, match=r"`max_layers`\. Received: 0\. Expected a positive"):
        write_report([runs], tmp_path, max_layers=0)
    with pytest.raises(ValueError, match=r"`metrics`\. Received: 'mean'\. Expected a non-empty"):
        write_report([runs], tmp_path, metrics="mean")
    with pytest.raises(ValueError, match=r"Run name 'a' is given twice"):
        write_report([runs / "a", f"a={runs / 'b'}"], tmp_path)


def test_cli_writes_the_report(runs, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "hist-007-old_layer.png").write_bytes(PNG_MAGIC)

    code = main(["report", f"base={runs / 'a'}", f"lr1={runs / 'b'}", "-o", str(out)])

    assert code == 0
    assert sorted(p.name for p in (out / "figures").iterdir())[:2] == [
        "hist-000-conv1.png",
        "hist-001-conv2.png",
    ]
    assert not (out / "figures" / "hist-007-old_layer.png").exists()
    assert capsys.readouterr().out == f"Wrote {out / 'index.html'}\n"
    page = (out / "index.html").read_text()
    assert '<th colspan="5">base</th><th colspan="5">lr1</th>' in page


def test_cli_missing_path_exits_2_naming_it(tmp_path, capsys):
    missing = tmp_path / "nowhere"

    code = main(["report", str(missing), "-o", str(tmp_path / "out")])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("tbprobe report: error: Run path ")
    assert f"{str(missing)!r} does not exist" in err
    assert not (tmp_path / "out").exists()


def test_cli_folder_without_probe_data_exits_2(tmp_path, capsys):
    (tmp_path / "runs" / "x" / "train").mkdir(parents=True)
    code = main(["report", str(tmp_path / "runs"), "-o", str(tmp_path / "out")])
    assert code == 2
    assert "No tbprobe data at or below" in capsys.readouterr().err


def test_cli_event_files_without_summaries_exit_2(tmp_path, capsys):
    import tensorflow as tf

    tf.summary.create_file_writer(str(tmp_path / "early" / "probe")).close()

    code = main(["report", str(tmp_path / "early"), "-o", str(tmp_path / "out")])

    assert code == 2
    assert "No tbprobe data in early (" in capsys.readouterr().err


@pytest.mark.slow
def test_report_on_a_probed_keras_model(tmp_path):
    import tbprobe

    model = tb_helpers.tiny_cnn()
    sample = tb_helpers.tiny_data()[0][:2]
    with tbprobe.Probe(model, tmp_path / "run", sample=sample, layers=["conv1", "dense"]) as probe:
        probe.log(0)
        probe.log(1)

    run = read_run(tmp_path / "run")
    index = write_report([run], tmp_path / "out")

    assert run.layers == ["conv1", "dense"]
    activations = np.asarray(model.get_layer("conv1")(sample))
    steps, sparsity = run.scalars["conv1"]["sparsity"]
    np.testing.assert_array_equal(steps, [0, 1])
    np.testing.assert_allclose(sparsity, np.mean(activations == 0), rtol=1e-6)
    step, rows = run.histograms["conv1"]
    assert step == 1 and rows.shape[1] == 3 and rows[:, 2].sum() == activations.size
    page = index.read_text()
    assert set(table_rows(page)) == {"conv1", "dense"}
    assert all((index.parent / s).is_file() for s in re.findall(r'<img src="([^"]+)"', page))
