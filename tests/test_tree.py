"""probe_tree: one row per probed output, a layer above its sublayers, against select_layers."""

from __future__ import annotations

from transformer_models import encoder

import tbprobe


def test_tree_lists_every_probed_output_indented_by_depth():
    model = encoder(blocks=1)
    text = tbprobe.probe_tree(model)
    lines = text.splitlines()
    outputs = tbprobe.select_layers(model)
    assert lines[0].split() == ["layer", "class", "output", "shape", "logged"]
    assert lines[-1] == f"{len(outputs)} probed outputs"
    rows = {line.split()[0]: line for line in lines[2:-2]}
    assert len(lines) - 4 == len(outputs)
    names = [line.split()[0] for line in lines[2:-2]]
    assert names[:3] == ["embed", "block_0", "attention"]  # a block above its sublayers
    query = next(line for line in lines if line.split()[0] == "query")
    assert query.startswith("    query") and "EinsumDense" in query and "(None, 5, 2, 4)" in query
    assert "histogram, scalars, heatmap" in query
    assert "attention image, entropy" in rows["attention/attention"]
    assert "(None, 2, 5, 5)" in rows["attention/attention"]


def test_tree_follows_layers_and_depth():
    model = encoder(blocks=1)
    text = tbprobe.probe_tree(model, layers=["block_0*"], depth=1)
    assert [line.split()[0] for line in text.splitlines()[2:-2]] == ["block_0"]
