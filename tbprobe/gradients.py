"""One backward pass on the probe batch, inside the log step's compiled function.

`forward_backward` runs the probe model's forward pass under a `tf.GradientTape`, scores it
with the loss of `tbprobe.targets`, and differentiates that loss with respect to every probed
output (dLoss/dOutput, the error signal reaching each layer) and to the trainable weights of
every probed layer (dLoss/dW). The outputs are the tensors `tbprobe.probing` records while the
graph is traced; downstream layers consume them (through the `tf.identity` that
`run_consuming` adds), so they lie on the tape's path to the loss. An output the loss does not
depend on gets a zero gradient.

No state changes: the forward pass runs with `training=False` (BatchNormalization uses and
keeps its moving statistics, dropout is off, so that log steps compare from step to step and
the activations logged are the ones logged without targets), no optimizer step is taken, and
the loss is computed statelessly (see `tbprobe.targets`).

Mixed precision: with a `LossScaleOptimizer`, the loss is multiplied by the optimizer's current
scale, as in a training step, so that float16 gradients do not underflow where training's do
not; every gradient is then cast to float32 and divided by that scale, and logged unscaled.

The gradients are reduced like activations (`tbprobe.stats.BatchedReductions`, all of them together: histogram
buckets, moments, non-finite fraction); `gradient_rms` is `sqrt(std^2 + mean^2)` of the finite
values. Per layer, `weight_rows` gives the RMS of its weights and of their gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tbprobe.probing import Consume, ProbedOutput, ProbeModel
from tbprobe.stats import OutputReduction
from tbprobe.tags import ATTENTION
from tbprobe.targets import LossFn


@dataclass(frozen=True)
class Backward:
    """What one forward and backward pass returns (tensors of the traced graph).

    Attributes:
        outputs: `{tag: activation}` of every probed output.
        gradients: `{tag: dLoss/dOutput}`, float32, unscaled.
        weight_gradients: `{layer path: [dLoss/dW per trainable weight]}`, float32, unscaled.
        loss: the float32 loss.
    """

    outputs: dict[str, tf.Tensor]
    gradients: dict[str, tf.Tensor]
    weight_gradients: dict[str, list[tf.Tensor]]
    loss: tf.Tensor


def weighted_layers(outputs: list[ProbedOutput]) -> dict[str, list[Any]]:
    """`{layer path: trainable weights}` of the probed layers that hold trainable weights.

    A layer called several times appears once. A nested model counts only when none of its
    own layers is probed (otherwise its weights are reported by those layers).

    Args:
        outputs: the probe model's `probed_outputs`.
    """
    layers = {out.path: out.layer for out in outputs}
    return {
        path: list(layer.trainable_weights)
        for path, layer in layers.items()
        if layer.trainable_weights
        and not (isinstance(layer, keras.Model) and any(p.startswith(f"{path}/") for p in layers))
    }


def forward_backward(
    probe_model: ProbeModel,
    sample: Any,
    targets: Any,
    loss_fn: LossFn,
    weights: dict[str, list[Any]],
    sample_weight: Any = None,
    consume: Consume | None = None,
    loss_scale: tf.Tensor | None = None,
) -> Backward:
    """Forward pass (`training=False`) and one backward pass on the probe batch; call it while
    tracing a `tf.function`.

    Args:
        probe_model: the `ProbeModel` whose outputs are differentiated.
        sample: the probe batch's inputs.
        targets: its targets, structured like the model's outputs.
        loss_fn: `loss_fn(x, y, y_pred, sample_weight) -> scalar` (`tbprobe.targets`).
        weights: `{layer path: trainable weights}` to differentiate (`weighted_layers`).
        sample_weight: optional sample weights for the loss.
        consume: optional `consume(output, tensor, mask) -> ops`, run as each output is made
            (see `ProbeModel.run_consuming`), off the tape.
        loss_scale: optional float32 loss scale (`optimizer_loss_scale`); gradients are
            returned divided by it.

    Returns:
        A `Backward`.

    Example:
        >>> @tf.function(autograph=False)
        ... def step(x, y):
        ...     result = forward_backward(probe, x, y, loss_function(model), weights)
        ...     return result.gradients
    """
    outputs: dict[str, tf.Tensor] = {}
    with tf.GradientTape() as tape:

        def record(output: ProbedOutput, x: tf.Tensor, mask: Any) -> list[tf.Tensor]:
            if output.kind != ATTENTION:  # attention probabilities get no gradient tags
                outputs[output.tag] = x
            if consume is None:
                return []
            with tape.stop_recording():
                return consume(output, x, mask)

        y_pred = probe_model.run_consuming(sample, record, training=False)
        loss = loss_fn(sample, targets, y_pred, sample_weight)
        scaled = loss if loss_scale is None else loss * loss_scale
    tags = list(outputs)
    variables = [_tape_variable(w) for layer_weights in weights.values() for w in layer_weights]
    grads = tape.gradient(
        scaled,
        [outputs[tag] for tag in tags] + variables,
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )
    grads = [_unscaled(g, loss_scale) for g in grads]
    gradients = dict(zip(tags, grads[: len(tags)], strict=True))
    weight_gradients, i = {}, len(tags)
    for path, layer_weights in weights.items():
        weight_gradients[path] = grads[i : i + len(layer_weights)]
        i += len(layer_weights)
    return Backward(outputs, gradients, weight_gradients, loss)


def _tape_variable(weight: Any) -> Any:
    """The variable the tape differentiates for a Keras weight. Inside a `tf.distribute`
    strategy's scope (cross-replica context) a mirrored variable has no handle for the tape;
    the log step, run on one device, reads its first component, so that one is differentiated
    (outside the scope the mirrored variable resolves to that component itself)."""
    variable = weight.value if isinstance(weight, keras.Variable) else weight
    if isinstance(variable, tf.distribute.DistributedValues) and (
        tf.distribute.in_cross_replica_context()
    ):
        return variable.values[0]
    return weight


def optimizer_loss_scale(model: Any) -> tf.Tensor | None:
    """The current loss scale of `model.optimizer` as float32, or None when it scales nothing.

    Reads the scale (a `LossScaleOptimizer`'s dynamic scale, or `loss_scale_factor`) without
    changing it; call it while tracing, so that each log step reads the current value.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return None
    scales = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    if not scales and getattr(optimizer, "loss_scale_factor", None) is None:
        return None
    return tf.cast(optimizer.scale_loss(tf.constant(1.0)), tf.float32)


def _unscaled(gradient: tf.Tensor, loss_scale: tf.Tensor | None) -> tf.Tensor:
    gradient = tf.cast(gradient, tf.float32)
    return gradient if loss_scale is None else gradient / loss_scale


def root_mean_square(tensors: list[tf.Tensor]) -> tf.Tensor:
    """`sqrt(sum of squares / number of elements)` over several tensors, in float32."""
    size = sum(math.prod(t.shape) for t in tensors)
    if size == 0:
        return tf.constant(0.0)
    total = tf.add_n([tf.reduce_sum(tf.square(tf.cast(t, tf.float32))) for t in tensors])
    return tf.sqrt(total / size)


def weight_rows(
    weights: dict[str, list[Any]], weight_gradients: dict[str, list[tf.Tensor]] | None
) -> tf.Tensor:
    """`[layers, 2]` float64 (`tbprobe.tags.WEIGHT_SCALAR_NAMES`): per layer, the RMS of its trainable weights and of
    their gradients (NaN without gradients)."""
    rows = []
    for path, layer_weights in weights.items():
        values = [tf.convert_to_tensor(w) for w in layer_weights]
        grad_rms = (
            tf.constant(np.nan, tf.float32)
            if weight_gradients is None
            else root_mean_square(weight_gradients[path])
        )
        rows.append(tf.stack([root_mean_square(values), grad_rms]))
    return tf.cast(tf.stack(rows), tf.float64)


def flat_weights(layer_weights: list[Any]) -> tf.Tensor:
    """One layer's trainable weights as one float vector, for its `weights` histogram."""
    return tf.concat([tf.reshape(tf.cast(w, tf.float32), [-1]) for w in layer_weights], axis=0)


def gradient_scalars(row: OutputReduction) -> dict[str, float]:
    """`gradient_rms` and `gradient_nonfinite` from a gradient's reductions: the RMS of the
    finite values is `sqrt(std^2 + mean^2)`."""
    return {
        "gradient_rms": float(np.sqrt(row.std * row.std + row.mean * row.mean)),
        "gradient_nonfinite": float(row.nonfinite),
    }
