"""The diagnosis rules: pure functions of a run's `RunMemory` and the thresholds in `Checks`.

Each rule reads scalars tbprobe already logs (no extra device work) and yields `Evidence` for
what it finds, one per output or one for the whole model. A rule whose scalars are not logged
(no gradients, no attention) finds nothing. `tbprobe.findings` turns evidence into findings,
with the step each was first seen at.

Fractions are logged as float32, so "at least" compares at float32 precision (9 dead units of
10, logged as 0.8999999762, count as 0.9).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tbprobe.findings import Checks
    from tbprobe.monitor import RunMemory

UPDATE_RATIO_RULE_OF_THUMB = 1e-3  # CS231n, "ratio of weights:updates"
_FLOAT32_TOLERANCE = 1e-6

TITLES = {
    "first_nonfinite": "first non-finite",
    "dead_layer": "dead layer",
    "dying_trend": "dying trend",
    "saturation": "saturation",
    "exploding_activations": "exploding activations",
    "vanishing_gradients": "vanishing gradients",
    "exploding_gradients": "exploding gradients",
    "update_ratio": "update ratio",
    "attention_collapse": "attention collapse",
}

HINTS = {
    "first_nonfinite": "look at this layer's weights and inputs; lower the learning rate, clip "
    "gradients (optimizer clipnorm=1.0), add an epsilon to divisions, logs and square roots, "
    "compute the loss from logits",
    "dead_layer": "likely causes: a learning rate too high, the initialization, a negative "
    "bias; try a lower learning rate, He initialization, BatchNormalization before the ReLU, "
    "or LeakyReLU/GELU",
    "dying_trend": "units are dying as training goes on: lower the learning rate or add "
    "warm-up; LeakyReLU/GELU keep a gradient for negative inputs",
    "saturation": "saturated units pass almost no gradient: normalize this layer's inputs "
    "(BatchNormalization, LayerNormalization), use Glorot initialization, lower the learning rate",
    "exploding_activations": "add normalization layers, lower the learning rate, clip gradients "
    "or add weight decay",
    "vanishing_gradients": "try residual connections, normalization layers, ReLU-like activations "
    "instead of sigmoid/tanh, He or Glorot initialization",
    "exploding_gradients": "clip gradients (optimizer clipnorm=1.0), lower the learning rate, "
    "add normalization layers",
    "update_ratio": "updates near 1e-3 of the weights are the rule of thumb",
    "attention_collapse": "lower the learning rate, add warm-up, normalize queries and keys "
    "(QK-norm); entropy collapse makes transformer training unstable (Zhai et al. 2023)",
}


@dataclass(frozen=True)
class Evidence:
    """What a rule found at the latest step.

    Attributes:
        rule: the rule's id, a key of `TITLES`.
        tag: the output or layer; `""` for all layers.
        value: the measured value.
        threshold: the threshold it was compared with.
        text: the evidence, in words.
        hint: what to try.
    """

    rule: str
    tag: str
    value: float
    threshold: float
    text: str
    hint: str


def evaluate(memory: RunMemory, checks: Checks) -> Iterator[Evidence]:
    """Every rule's evidence at the latest step, rule by rule, outputs in call order."""
    for rule in RULES:
        yield from rule(memory, checks)


def first_nonfinite(memory: RunMemory, checks: Checks) -> Iterator[Evidence]:
    """The first output in call order holding NaN/Inf, at the first step any output did.

    With only the call order known, the first output with non-finite values is the one whose
    inputs were finite. For gradients (when logged, and activations are finite), it is the
    last output in call order: the first one the backward pass reaches from the loss.
    """
    for origin, metric, what in (
        (memory.nonfinite_origin, "nonfinite", "output"),
        (memory.gradient_origin, "gradient_nonfinite", "gradient"),
    ):
        if origin is None:
            continue
        tag, since = origin
        value = memory.latest[tag][metric]
        later = sum(m.get(metric, 0.0) > checks.nonfinite for m in memory.latest.values()) - 1
        order = "first output in call order" if what == "output" else "last output in call order"
        text = (
            f"{value:.1%} of its {what} values are NaN or Inf; at step {since} it was the "
            f"{order} with non-finite {what}s, {later} other output(s) have some now"
        )
        yield Evidence(
            "first_nonfinite", tag, value, checks.nonfinite, text, HINTS["first_nonfinite"]
        )
        return


def dead_layer(memory: RunMemory, checks: Checks) -> Iterator[Evidence]:
    """`dead_units >= checks.dead_units` on an output that was below it at its first log."""
    for tag, (first_step, first, dead) in _series(memory, "dead_units"):
        if _dead(first, dead, checks):
            text = (
                f"{dead:.0%} of its units output 0 for every probe sample "
                f"(dead_units {dead:.2f} >= {checks.dead_units:g}; {first:.0%} at step {first_step})"
            )
            yield Evidence("dead_layer", tag, dead, checks.dead_units, text, HINTS["dead_layer"])


def dying_trend(memory: RunMemory, checks: Checks) -> Iterator[Evidence]:
    """`dead_units` rose by `checks.dying_rise` since the first log, not yet a dead layer."""
    for tag, (first_step, first, dead) in _series(memory, "dead_units"):
        if _at_least(dead - first, checks.dying_rise) and not _dead(first, dead, checks):
            text = f"dead_units rose from {first:.0%} at step {first_step} to {dead:.0%}"
            yield Evidence(
                "dying_trend", tag, dead - first, checks.dying_rise, text, HINTS["dying_trend"]
            )


def saturation(memory: RunMemory, checks: Checks) -> Iterator[Evidence]:
    """`saturated >= checks.saturated`, except on the model's final output."""
    outputs = [tag for tag, metrics in memory.latest.items() if "mean" in metrics]
    final = outputs[-1] if outputs else None
    for tag, (_, _, value) in _series(memory, "saturated"):
        if tag != final and _at_least(value, checks.saturated):
            text = f"{value:.0%} of its values are within 1e-3 of the activation's bounds"
            yield Evidence("saturation", tag, value, checks.saturated, text, HINTS["saturation"])


def exploding_activations(memory: RunMemory, checks: Checks) -> Iterator[Evidence]:
    """`std > checks.std_limit`, or `std` grew `checks.std_growth` times since the first log."""
    for tag, (first_step, first, std) in _series(memory, "std"):
        if std > checks.std_limit:
            text = f"std {std:.3g} > {checks.std_limit:g} ({first:.3g} at step {first_step})"
            value, threshold = std, checks.std_limit
        elif _at_least(std / max(first, checks.std_floor), checks.std_growth):
            text = (
                f"std grew {std / first if first else math.inf:.3g}x, from {first:.3g} at step "
                f"{first_step} to {std:.3g}"
            )
            value, threshold = std / max(first, checks.std_floor), checks.std_growth
        else:
            continue
        yield Evidence(
            "exploding_activations", tag, value, threshold, text, HINTS["exploding_activations"]
        )


def gradient_depth_profile(memory: RunMemory, checks: Checks) -> Iterator[Evidence]:
    """`gradient_rms` of the first probed output over the last's outside the ratio bounds."""
    profile = [(tag, value) for tag, (_, _, value) in _series(memory, "gradient_rms")]
    profile = [(tag, value) for tag, value in profile if math.isfinite(value)]
    if len(profile) < 2 or profile[-1][1] <= 0:
        return
    (first_tag, first), (last_tag, last) = profile[0], profile[-1]
    ratio = first / last
    if ratio < checks.gradient_ratio_low:
        rule, threshold = "vanishing_gradients", checks.gradient_ratio_low
    elif ratio > checks.gradient_ratio_high:
        rule, threshold = "exploding_gradients", checks.gradient_ratio_high
    else:
        return
    text = (
        f"gradient_rms {last:.3g} at {last_tag} (last probed) and {first:.3g} at {first_tag} "
        f"(first): ratio {ratio:.3g}"
    )
    yield Evidence(rule, first_tag, ratio, threshold, text, HINTS[rule])


def update_ratio(memory: RunMemory, checks: Checks) -> Iterator[Evidence]:
    """`update_ratio` outside [low, high] for more than `checks.update_ratio_layers` of layers."""
    ratios = [value for _, (_, _, value) in _series(memory, "update_ratio") if math.isfinite(value)]
    if not ratios:
        return
    median = float(np.median(ratios))
    for side, threshold, outside in (
        ("high", checks.update_ratio_high, [r for r in ratios if r > checks.update_ratio_high]),
        ("low", checks.update_ratio_low, [r for r in ratios if r < checks.update_ratio_low]),
    ):
        if len(outside) > checks.update_ratio_layers * len(ratios):
            text = (
                f"learning rate likely too {side}: {len(outside)} of {len(ratios)} layers have "
                f"an update ratio {'above' if side == 'high' else 'below'} {threshold:g}, "
                f"median {median:.3g} (rule of thumb ~{UPDATE_RATIO_RULE_OF_THUMB:g})"
            )
            factor = "lower" if side == "high" else "higher"
            hint = f"try a {factor} learning rate; {HINTS['update_ratio']}"
            yield Evidence("update_ratio", "", median, threshold, text, hint)


def attention_collapse(memory: RunMemory, checks: Checks) -> Iterator[Evidence]:
    """`attention_entropy_min < checks.attention_entropy`."""
    for tag, (_, _, value) in _series(memory, "attention_entropy_min"):
        if value < checks.attention_entropy:
            mean = memory.latest[tag].get("attention_entropy", math.nan)
            text = (
                f"its lowest head's attention entropy is {value:.3g} (0 = one-hot, 1 = uniform; "
                f"mean over heads {mean:.3g})"
            )
            yield Evidence(
                "attention_collapse",
                tag,
                value,
                checks.attention_entropy,
                text,
                HINTS["attention_collapse"],
            )


RULES: tuple[Callable[[RunMemory, Checks], Iterator[Evidence]], ...] = (
    first_nonfinite,
    dead_layer,
    dying_trend,
    saturation,
    exploding_activations,
    gradient_depth_profile,
    update_ratio,
    attention_collapse,
)


def _series(memory: RunMemory, metric: str) -> Iterator[tuple[str, tuple[int, float, float]]]:
    """`(tag, (first_step, first_value, latest_value))` of each tag logging `metric`."""
    for tag, latest in memory.latest.items():
        if metric in latest:
            first_step, first = memory.first[tag][metric]
            yield tag, (first_step, first, latest[metric])


def _dead(first: float, dead: float, checks: Checks) -> bool:
    return _at_least(dead, checks.dead_units) and not _at_least(first, checks.dead_units)


def _at_least(value: float, threshold: float) -> bool:
    return value >= threshold - _FLOAT32_TOLERANCE * max(1.0, abs(threshold))
