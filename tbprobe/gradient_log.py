"""`GradientLog`: what a `Probe` computes and writes for gradients and weights.

The `Probe` owns one when it is given targets, `update_ratio=True` or `weight_histograms=True`.
Inside the log step's compiled function, `run` replaces the plain forward pass: with targets,
`tbprobe.gradients.forward_backward` (the activations are still reduced as their layers
return, by the `consume` the `Probe` passes), then the reductions of every gradient and of the
weights. On the host, `add_values` turns them into tags:

* per probed output `<tag>` (with targets): `<tag>/gradients` (histogram of dLoss/dOutput,
  the activations' bucketing rules), `<tag>/gradient_rms`, `<tag>/gradient_nonfinite`;
* per probed layer with trainable weights `<layer>`: `<layer>/weight_rms`,
  `<layer>/weight_gradient_rms` (with targets), `<layer>/weights` (`weight_histograms=True`),
  and `<layer>/update_ratio` (`update_ratio`, see `tbprobe.updates`).

Reductions follow `tbprobe.stats`: when one holds NaN, Inf or huge values (its `exact` field is
0), `run_exact`, a second compiled function traced on first need, recomputes it exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from tbprobe import summaries
from tbprobe.event_file import EventFile
from tbprobe.gradients import (
    flat_weights,
    forward_backward,
    gradient_scalars,
    optimizer_loss_scale,
    weight_rows,
    weighted_layers,
)
from tbprobe.options import LogOptions
from tbprobe.probing import Consume, ProbeModel
from tbprobe.stats import (
    FIELDS,
    BatchedReductions,
    OutputSpec,
    layer_reductions_exact,
    unpack_rows,
)
from tbprobe.tags import (
    ATTENTION,
    GRADIENT_HISTOGRAM,
    UPDATE_RATIO,
    WEIGHT_HISTOGRAM,
    WEIGHT_SCALAR_NAMES,
)
from tbprobe.targets import (
    as_target_tensors,
    check_targets,
    loss_function,
)
from tbprobe.updates import UpdateRatios

EXACT = FIELDS.index("exact")


class GradientLog:
    """Gradients and weights of a probed model: compiled parts and tags.

    Args:
        model: the probed `keras.Model`.
        probe_model: its `ProbeModel`.
        sample: the probe batch's inputs, as tensors.
        targets: its targets, or None (no gradients).
        sample_weight: optional sample weights for the loss.
        loss: None for the compiled loss, or a callable `(y_true, y_pred) -> scalar`.
        update_ratio: whether to measure update ratios (needs a training step after a log).
        weight_histograms: whether to log `<layer>/weights` histograms.
        options: the probe's `LogOptions` (buckets, histogram_sample).

    Raises:
        ValueError, TypeError: as `tbprobe.targets.loss_function` and `check_targets`.
    """

    def __init__(
        self,
        model: Any,
        probe_model: ProbeModel,
        sample: Any,
        targets: Any,
        sample_weight: Any,
        loss: Any,
        update_ratio: bool,
        weight_histograms: bool,
        options: LogOptions,
    ):
        self.model = model
        self.probe_model = probe_model
        self.options = options
        self.weights = weighted_layers(probe_model.probed_outputs)
        self.tags = [out.tag for out in probe_model.probed_outputs if out.kind != ATTENTION]
        self.targets = self.sample_weight = self.loss_fn = None
        if targets is not None:
            self.loss_fn = loss_function(model, loss)
            self.targets = as_target_tensors(targets)
            if sample_weight is not None:
                self.sample_weight = as_target_tensors(sample_weight)
            check_targets(model, sample, self.targets, self.sample_weight, self.loss_fn)
        self.weight_histograms = bool(weight_histograms)
        self.update_ratios = UpdateRatios(self.weights) if update_ratio else None
        self._exact = tf.function(self.run_exact, autograph=False)
        self._ratios = summaries.SummaryBuilder()
        self.last_update_ratios: dict[str, float] = {}  # as last written, for the diagnosis

    @property
    def gradients(self) -> bool:
        """Whether gradients are computed (targets were given)."""
        return self.targets is not None

    def run(self, sample: Any, consume: Consume) -> dict[str, tf.Tensor]:
        """In the compiled log step: the forward pass (backward too with targets), handing each
        output to `consume`; returns the reductions as `{"gradients", "weights",
        "weight_histograms": matrix}` (each present when asked)."""
        if not self.gradients:
            self.probe_model.run_consuming(sample, consume)
            return self._reductions(None, _fast_reductions)
        return self._reductions(self._backward(sample, consume), _fast_reductions)

    def run_exact(self, sample: Any) -> dict[str, tf.Tensor]:
        """As `run`, every reduction exact (NaN, Inf and huge values allowed)."""
        backward = self._backward(sample, None) if self.gradients else None
        return self._reductions(backward, _exact_reductions)

    def fix_inexact(self, sample: Any, results: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Replace the rows whose fast reductions are not exact by exact ones."""
        inexact = {
            key: value[:, EXACT] == 0
            for key, value in results.items()
            if key != "weights" and value.size
        }
        if any(mask.any() for mask in inexact.values()):
            exact = self._exact(sample)
            for key, mask in inexact.items():
                results[key][mask] = exact[key].numpy()[mask]
        return results

    def add_values(
        self,
        builder: summaries.SummaryBuilder,
        results: dict[str, Any],
        logged: dict[str, dict[str, float]],
    ) -> None:
        """Add the gradient and weight tags of one log step to `builder`, and their scalars
        (with the update ratios last written) to `logged` (`{tag: {name: value}}`)."""
        if "gradients" in results:
            for tag, row in zip(self.tags, unpack_rows(results["gradients"]), strict=True):
                builder.histogram(f"{tag}/{GRADIENT_HISTOGRAM}", row.histogram())
                for name, value in gradient_scalars(row).items():
                    builder.scalar(f"{tag}/{name}", value)
                    logged.setdefault(tag, {})[name] = value
        for path, row in zip(self.weights, results["weights"], strict=True):
            names = WEIGHT_SCALAR_NAMES if self.gradients else WEIGHT_SCALAR_NAMES[:1]
            for name, value in zip(names, row, strict=False):
                builder.scalar(f"{path}/{name}", float(value))
                logged.setdefault(path, {})[name] = float(value)
        for path, ratio in self.last_update_ratios.items():
            logged.setdefault(path, {})[UPDATE_RATIO] = ratio
        if "weight_histograms" in results:
            for path, row in zip(
                self.weights, unpack_rows(results["weight_histograms"]), strict=True
            ):
                builder.histogram(f"{path}/{WEIGHT_HISTOGRAM}", row.histogram())

    def after_log(self, step: int) -> None:
        """Snapshot the weights logged at `step`, for the next training step's update ratio."""
        if self.update_ratios is not None:
            self.update_ratios.snapshot(step)

    def write_update_ratios(self, step: int, events: EventFile) -> bool:
        """Write the update ratios due at `step` (one training step after a log) to `events`.
        Returns whether anything was written."""
        if self.update_ratios is None:
            return False
        measured = self.update_ratios.measure(step)
        if measured is None:
            return False
        at, ratios = measured
        for path, ratio in ratios.items():
            self._ratios.scalar(f"{path}/{UPDATE_RATIO}", ratio)
        self.last_update_ratios = dict(ratios)
        events.write(at, self._ratios)
        events.flush(at)
        return True

    def _backward(self, sample: Any, consume: Consume | None) -> Any:
        assert self.loss_fn is not None, "called only with targets, which set loss_fn"
        return forward_backward(
            self.probe_model,
            sample,
            self.targets,
            self.loss_fn,
            self.weights,
            self.sample_weight,
            consume,
            optimizer_loss_scale(self.model),
        )

    def manifest_columns(self, path: str) -> tuple[bool, bool]:
        """(gradients logged, weights logged) for the outputs of layer `path`."""
        return self.gradients, path in self.weights

    def _reductions(self, backward: Any, reduce: Callable[..., tf.Tensor]) -> dict[str, tf.Tensor]:
        o = self.options
        results = {}
        if backward is not None:
            results["gradients"] = reduce(
                [backward.gradients[tag] for tag in self.tags], o.buckets, o.histogram_sample
            )
        if self.weights:
            grads = None if backward is None else backward.weight_gradients
            results["weights"] = weight_rows(self.weights, grads)
        else:
            results["weights"] = tf.zeros([0, len(WEIGHT_SCALAR_NAMES)], tf.float64)
        if self.weight_histograms and self.weights:
            results["weight_histograms"] = reduce(
                [flat_weights(ws) for ws in self.weights.values()], o.buckets, o.histogram_sample
            )
        return results


def _fast_reductions(tensors: list[tf.Tensor], buckets: int, histogram_sample: Any) -> tf.Tensor:
    """`[tensors, FIELDS + buckets]`, batched as activations are. Each tensor is one unit:
    dead units and sparsity of a gradient are not logged."""
    batch = BatchedReductions([OutputSpec(None) for _ in tensors], buckets, 0.0, histogram_sample)
    for i, tensor in enumerate(tensors):
        batch.reduce(i, tensor)
    return batch.finish()


def _exact_reductions(tensors: list[tf.Tensor], buckets: int, histogram_sample: Any) -> tf.Tensor:
    del histogram_sample  # the exact branch buckets every element
    return tf.stack([layer_reductions_exact(t, buckets, 0.0, None) for t in tensors])
