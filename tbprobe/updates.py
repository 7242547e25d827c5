"""Update ratios: the relative size of one real optimizer step, per layer.

`update_ratio = ||W_after - W_before|| / ||W_before||` over a layer's trainable weights, around
one training step. It is measured on a real step, not estimated from the learning rate times
the gradient (Adam-style optimizers rescale each update; Keras 3.15's
`optimizer.stateless_apply` refuses the TensorFlow backend, so a step cannot be simulated).

`UpdateRatios.snapshot(step)` keeps an on-device copy of the weights (one compiled call; the
copy costs one model's weights of memory until it is measured); `measure(step)`, called after
the next training step, compares and drops the copy. The ratio is reported at the snapshot's
step. If more than one step passed (`step > snapshot step + 1`) the copy is dropped unmeasured,
with one warning: the ratio of several steps is not that of one.
"""

from __future__ import annotations

import warnings
from typing import Any

import tensorflow as tf


class UpdateRatios:
    """Snapshot the weights at a log step; measure the update of the next training step.

    Args:
        weights: `{layer path: trainable weights}` (`tbprobe.gradients.weighted_layers`).

    Example:
        >>> ratios = UpdateRatios(weighted_layers(probe_model.probed_outputs))
        >>> ratios.snapshot(step)
        >>> train_step(xb, yb)
        >>> ratios.measure(step + 1)  # (step, {"conv1": 1.2e-3, ...})
    """

    def __init__(self, weights: dict[str, list[Any]]):
        self.weights = weights
        self._copy = tf.function(self._copy_weights, autograph=False)
        self._ratios = tf.function(self._compare, autograph=False)
        self._before: dict[str, list[tf.Tensor]] | None = None
        self._step: int | None = None
        self._warned = False

    @property
    def pending(self) -> int | None:
        """The step of the snapshot waiting for its training step, or None."""
        return self._step

    def snapshot(self, step: int) -> None:
        """Copy the weights now (on device), as they are at `step`."""
        self._before = self._copy()
        self._step = step

    def measure(self, step: int) -> tuple[int, dict[str, float]] | None:
        """The update ratios of the training step from the snapshot to now, if it is one step.

        Args:
            step: the current step; one more than the snapshot's after one training step.

        Returns:
            `(snapshot step, {layer path: ratio})`, or None when there is no snapshot, when
            `step` is the snapshot's own (no training step yet), or when more than one step
            passed (one warning, the first time).
        """
        if self._before is None or self._step is None or step == self._step:
            return None
        before, at = self._before, self._step
        self._before = self._step = None
        if step != at + 1:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"tbprobe skips the update ratio of step {at}: it was measured at step "
                    f"{step}, {step - at} training steps later, not after the next one. Call "
                    "probe.log(step) (or probe.measure_update(step)) after every training step.",
                    stacklevel=3,
                )
            return None
        ratios = self._ratios(before).numpy()
        return at, {path: float(r) for path, r in zip(self.weights, ratios, strict=True)}

    def drop(self) -> None:
        """Forget a pending snapshot (e.g. when training ends)."""
        self._before = self._step = None

    def _copy_weights(self) -> dict[str, list[tf.Tensor]]:
        # Reads of a resource variable are copied on write: the optimizer's next update makes
        # a new buffer, so these tensors keep the values of now.
        return {
            path: [tf.identity(w) for w in layer_weights]
            for path, layer_weights in self.weights.items()
        }

    def _compare(self, before: dict[str, list[tf.Tensor]]) -> tf.Tensor:
        ratios = []
        for path, layer_weights in self.weights.items():
            change = tf.add_n(
                [
                    tf.reduce_sum(tf.square(tf.cast(w, tf.float32) - tf.cast(b, tf.float32)))
                    for w, b in zip(layer_weights, before[path], strict=True)
                ]
            )
            norm = tf.add_n(
                [tf.reduce_sum(tf.square(tf.cast(b, tf.float32))) for b in before[path]]
            )
            ratios.append(tf.sqrt(change) / tf.sqrt(norm))
        return tf.stack(ratios) if ratios else tf.zeros([0])
