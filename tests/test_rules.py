"""tbprobe.rules on synthetic histories: each rule fires at its threshold, not just below it,
and stays silent on healthy runs and on scalars that are not logged."""

from __future__ import annotations

import numpy as np
import pytest

from tbprobe.findings import Checks
from tbprobe.monitor import diagnose

STEP = 10


def history(**series: list[float]) -> dict:
    """`{tag: {metric: (steps, values)}}` from keywords `tag__metric=[values at 0, 10, ...]`;
    tags in keyword order (= call order)."""
    out: dict = {}
    for key, values in series.items():
        tag, metric = key.split("__")
        steps = np.arange(len(values), dtype=np.int64) * STEP
        out.setdefault(tag, {})[metric] = (steps, np.asarray(values, dtype=np.float64))
    return out


def found(hist: dict, checks: Checks | None = None) -> list[tuple[str, str, int]]:
    return [(f.rule, f.tag, f.first_step) for f in diagnose(hist, checks)]


# ---- dead layer and dying trend


def test_dead_layer_fires_at_the_threshold_from_the_step_it_is_first_seen():
    hist = history(conv1__dead_units=[0.0, 0.5, 0.9, 1.0], conv2__dead_units=[0.0] * 4)
    assert found(hist) == [("dead_layer", "conv1", 2 * STEP)]
    (finding,) = diagnose(hist)
    assert (finding.last_step, finding.value, finding.threshold) == (3 * STEP, 1.0, 0.9)
    assert "conv1" in finding.message and "100%" in finding.message
    assert f"since step {2 * STEP}" in finding.message and finding.hint in finding.message


def test_dead_layer_not_just_below_the_threshold():
    assert found(history(conv1__dead_units=[0.0, 0.89])) == [("dying_trend", "conv1", STEP)]


def test_dead_layer_compares_at_float32_precision():
    logged = float(np.float32(0.9))  # 9 of 10 units, as the event file holds it
    assert logged < 0.9
    assert found(history(conv1__dead_units=[0.0, logged])) == [("dead_layer", "conv1", STEP)]


def test_dead_layer_not_on_an_output_mostly_dead_at_its_first_log():
    assert found(history(relu__dead_units=[0.95, 1.0])) == []


def test_dead_layer_clears_when_units_come_back():
    assert found(history(conv1__dead_units=[0.0, 1.0, 0.2])) == []


def test_dying_trend_at_and_below_the_rise():
    assert found(history(dense__dead_units=[0.25, 0.4, 0.55])) == [
        ("dying_trend", "dense", 2 * STEP)
    ]
    assert found(history(dense__dead_units=[0.25, 0.5])) == []  # rose 0.25 < 0.3


def test_dying_trend_gives_way_to_dead_layer():
    assert found(history(dense__dead_units=[0.0, 0.5, 1.0])) == [("dead_layer", "dense", 2 * STEP)]


# ---- saturation


def test_saturation_at_and_below_the_threshold_never_on_the_final_output():
    hist = history(
        tanh__mean=[0.0, 0.0],
        tanh__saturated=[0.0, 0.9],
        sig__mean=[0.0, 0.0],
        sig__saturated=[0.0, 0.89],
        softmax__mean=[0.1, 0.1],
        softmax__saturated=[0.0, 1.0],  # the model's output: confident predictions are the goal
    )
    assert found(hist) == [("saturation", "tanh", STEP)]


# ---- first non-finite


def test_first_nonfinite_names_the_first_output_in_call_order_and_keeps_it():
    hist = history(
        d1__nonfinite=[0.0, 0.0, 1.0, 1.0],
        d2__nonfinite=[0.0, 0.25, 1.0, 1.0],  # the origin, at step 10
        d3__nonfinite=[0.0, 1.0, 1.0, 1.0],
        d4__nonfinite=[0.0, 1.0, 1.0, 1.0],
    )
    # At step 20 the NaN has reached d1 too (a training step spread it): the origin stays d2.
    (finding,) = diagnose(hist)
    assert (finding.rule, finding.tag, finding.first_step, finding.value) == (
        "first_nonfinite",
        "d2",
        STEP,
        1.0,
    )
    assert "step 10" in finding.evidence and "3 other output(s)" in finding.evidence


def test_first_nonfinite_clears_and_a_new_stretch_finds_a_new_origin():
    hist = history(
        d1__nonfinite=[0.0, 0.0, 0.0, 0.5],
        d2__nonfinite=[0.0, 1.0, 0.0, 1.0],
    )
    assert found(hist) == [("first_nonfinite", "d1", 3 * STEP)]
    assert (
        found({tag: {m: (s[:3], v[:3])} for tag, ms in hist.items() for m, (s, v) in ms.items()})
        == []
    )


def test_first_nonfinite_gradients_start_from_the_loss():
    hist = history(
        d1__nonfinite=[0.0, 0.0],
        d1__gradient_nonfinite=[0.0, 1.0],
        d2__nonfinite=[0.0, 0.0],
        d2__gradient_nonfinite=[0.0, 1.0],  # the last in call order with non-finite gradients
        d3__nonfinite=[0.0, 0.0],
        d3__gradient_nonfinite=[0.0, 0.0],
    )
    (finding,) = diagnose(hist)
    assert (finding.rule, finding.tag) == ("first_nonfinite", "d2")
    assert "gradient" in finding.evidence


def test_nonfinite_threshold_is_configurable():
    hist = history(d1__nonfinite=[0.0, 0.01])
    assert found(hist, Checks(nonfinite=0.01)) == []
    assert found(hist) == [("first_nonfinite", "d1", STEP)]


# ---- exploding activations


@pytest.mark.parametrize(
    ("stds", "fires"),
    [
        ([0.5, 100.0], True),  # from below std_floor=1: 100 / max(0.5, 1) = 100x
        ([0.5, 99.0], False),
        ([0.05, 7.7], False),  # logits of a healthy classifier: 154x from 0.05, but small
        ([2.0, 200.0], True),
        ([2.0, 199.0], False),
        ([2e4, 2e4], True),  # above std_limit, whatever the growth
        ([1e4, 1e4], False),
    ],
)
def test_exploding_activations(stds, fires):
    expected = [("exploding_activations", "dense", STEP)] if fires else []
    if stds[0] > 1e4:
        expected = [("exploding_activations", "dense", 0)]
    assert found(history(dense__std=stds)) == expected


# ---- gradients: depth profile and update ratio


@pytest.mark.parametrize(
    ("first", "rule"),
    [(1e-5, "vanishing_gradients"), (1e-4, None), (1e4, None), (2e4, "exploding_gradients")],
)
def test_gradient_ratio_between_first_and_last_probed_output(first, rule):
    hist = history(
        conv1__gradient_rms=[1.0, first],
        conv2__gradient_rms=[1.0, 1.0],
        logits__gradient_rms=[1.0, 1.0],
    )
    assert found(hist) == ([(rule, "conv1", STEP)] if rule else [])


def test_gradient_ratio_needs_two_outputs():
    assert found(history(logits__gradient_rms=[1.0, 1e-9])) == []


@pytest.mark.parametrize(
    ("ratios", "side"),
    [
        ([0.2, 0.3, 0.5, 1e-3], "high"),  # 3 of 4 above 1e-1
        ([0.2, 0.3, 1e-3, 1e-3], None),  # half is not most
        ([0.1, 0.1, 0.1, 0.1], None),  # at the bound is inside
        ([1e-6, 1e-6, 1e-6, 1e-3], "low"),
    ],
)
def test_update_ratio_for_most_layers(ratios, side):
    hist = history(**{f"l{i}__update_ratio": [1e-3, r] for i, r in enumerate(ratios)})
    findings = diagnose(hist)
    if side is None:
        assert findings == []
        return
    (finding,) = findings
    assert (finding.rule, finding.tag, finding.first_step) == ("update_ratio", "", STEP)
    assert finding.value == pytest.approx(np.median(ratios))
    assert f"too {side}" in finding.evidence


# ---- attention


def test_attention_collapse_below_the_threshold_only():
    hist = history(
        a1__attention_entropy_min=[0.8, 0.05],
        a1__attention_entropy=[0.9, 0.5],
        a2__attention_entropy_min=[0.8, 0.1],
    )
    assert found(hist) == [("attention_collapse", "a1", STEP)]


# ---- healthy runs and silence


def test_healthy_cnn_history_has_no_finding():
    """The demo's baseline as measured (7 epochs-end logs): ReLUs partly dead from the start,
    stds growing from small initial values."""
    hist = history(
        conv3__dead_units=[0.016, 0.172, 0.156, 0.156, 0.156, 0.156, 0.156],
        conv3__std=[0.053, 0.205, 0.82, 1.099, 1.361, 1.605, 1.735],
        conv3__nonfinite=[0.0] * 7,
        dense__dead_units=[0.578, 0.594, 0.562, 0.531, 0.531, 0.531, 0.531],
        dense__std=[0.026, 0.137, 0.72, 1.089, 1.43, 1.75, 1.945],
        dense__nonfinite=[0.0] * 7,
        logits__dead_units=[0.0] * 7,
        logits__std=[0.054, 0.304, 2.243, 3.853, 5.451, 6.799, 7.696],
        logits__nonfinite=[0.0] * 7,
    )
    assert found(hist) == []


def test_run_tags_and_unknown_metrics_are_ignored():
    hist = history(tbprobe__findings=[3.0, 3.0], conv1__other=[1e9, np.nan])
    assert found(hist) == []
