"""The probe batch's targets and the loss they are scored with, for tbprobe's gradients.

`Probe(..., targets=y)` turns on one backward pass per log step (`tbprobe.gradients`). The
loss is the compiled model's (`model.compute_loss`: every output's loss, the loss weights and
the regularization losses), or a `loss=` callable `(y_true, y_pred) -> scalar` for uncompiled
models and custom loops. A `tf.data.Dataset` sample brings its first batch's targets and sample
weights along (`split_sample`).

Both are checked at construction (`check_targets`): the batch size, the structure, and one
eager call of the loss on zeros shaped like the model's outputs, so that targets the loss cannot
take fail there, naming the shapes expected.

Under `tf.distribute`, Keras losses divide by the number of replicas when traced inside a
strategy's scope (each replica's share of a global batch); tbprobe undoes it, so that the
logged gradients are those of the probe batch's loss on one device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

LossFn = Callable[[Any, Any, Any, Any], tf.Tensor]
"""`loss_fn(x, y, y_pred, sample_weight) -> float32 scalar`."""


def split_sample(sample: Any) -> tuple[Any, Any, Any]:
    """`(inputs, targets, sample_weight)` of a dataset's first batch, read once (a shuffled
    dataset gives another batch each time); `(sample, None, None)` for other samples and for a
    dataset that yields nothing."""
    if not isinstance(sample, tf.data.Dataset):
        return sample, None, None
    for batch in sample.take(1):
        return keras.utils.unpack_x_y_sample_weight(batch)
    return sample, None, None


def has_loss(model: Any, loss: Any) -> bool:
    """Whether a loss is available: `loss=` given, or `model` compiled with a loss."""
    return loss is not None or getattr(model, "loss", None) is not None


def loss_function(model: Any, loss: Any = None) -> LossFn:
    """The probe batch's loss as `loss_fn(x, y, y_pred, sample_weight)`.

    Args:
        model: the probed `keras.Model`.
        loss: None for the compiled loss, or a callable `(y_true, y_pred) -> scalar` (a
            `keras.losses.Loss` also receives the sample weights; a non-scalar result is
            averaged).

    Returns:
        A function returning the loss as a float32 scalar, unscaled for `tf.distribute`.

    Raises:
        TypeError: `loss` is not callable.
        ValueError: no `loss` and `model` is not compiled with one.
    """
    if loss is not None:
        if not callable(loss):
            raise TypeError(
                f"Invalid value for argument `loss`. Received: loss={loss!r}. Expected a callable "
                "(y_true, y_pred) -> scalar, e.g. keras.losses.MeanSquaredError()."
            )
        return _callable_loss(loss)
    if not has_loss(model, None):
        raise ValueError(
            f"Gradients need a loss: model {model.name!r} is not compiled with one. Pass "
            "loss=<a callable (y_true, y_pred) -> scalar>, or compile the model with a loss."
        )
    return _compiled_loss(model)


def _compiled_loss(model: Any) -> LossFn:
    def compiled_loss(x: Any, y: Any, y_pred: Any, sample_weight: Any) -> tf.Tensor:
        # stateless_compute_loss: a multi-output CompileLoss updates one Mean metric per output
        # (fit's `<output>_loss` logs); the stateless call computes the same loss and leaves
        # those metrics alone. Inside its scope `model.losses` would drop the losses the
        # forward pass added (activity regularizers, add_loss), so they are handed over as
        # Keras's JAX trainer does, through the private `_losses_override` list.
        # add_loss of the forward pass + weight regularizers
        model._losses_override[:] = _of_this_context(model.losses)
        try:
            loss, _ = model.stateless_compute_loss(
                [v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables],
                [v.value for v in model.metrics_variables],
                x=x,
                y=y,
                y_pred=y_pred,
                sample_weight=sample_weight,
                training=False,
            )
        finally:
            model._losses_override.clear()
        return _unscaled(tf.cast(loss, tf.float32))

    return compiled_loss


def _of_this_context(losses: list[Any]) -> list[Any]:
    """The losses usable here: a layer keeps those of its last call, which may belong to
    another graph (an earlier trace) when the loss is computed without a forward pass."""
    if tf.executing_eagerly():
        return [loss for loss in losses if not tf.is_symbolic_tensor(loss)]
    graph = tf.compat.v1.get_default_graph()
    return [loss for loss in losses if getattr(loss, "graph", None) is graph]


def _callable_loss(loss: Callable[..., Any]) -> LossFn:
    is_keras_loss = isinstance(loss, keras.losses.Loss)

    def callable_loss(x: Any, y: Any, y_pred: Any, sample_weight: Any) -> tf.Tensor:
        if is_keras_loss:
            return _unscaled(tf.cast(loss(y, y_pred, sample_weight), tf.float32))
        return tf.reduce_mean(tf.cast(loss(y, y_pred), tf.float32))

    return callable_loss


def _unscaled(loss: tf.Tensor) -> tf.Tensor:
    """Undo Keras's `scale_loss_for_distribution`, which divides by the replica count of the
    strategy in scope when the loss is traced (1 outside any strategy scope)."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss * replicas if replicas > 1 else loss


def check_targets(
    model: Any, sample: Any, targets: Any, sample_weight: Any, loss_fn: LossFn
) -> None:
    """Check at construction that the loss takes `targets` for the model's outputs on `sample`.

    Raises:
        ValueError: a batch size other than the sample's, or targets the loss cannot score
            against outputs of the model's output shapes (the message names them).
    """
    batch = int(tf.nest.flatten(sample)[0].shape[0])
    for leaf in tf.nest.flatten(targets):
        shape = tuple(leaf.shape)
        if not shape or shape[0] != batch:
            raise ValueError(
                f"Invalid value for argument `targets`. Received: targets of shape {shape}. "
                f"Expected {batch} targets, one per sample of the probe batch (first axis)."
            )
    spec = tf.nest.map_structure(
        lambda t: keras.KerasTensor(t.shape, t.dtype.name, sparse=False), sample
    )
    outputs = model.compute_output_spec(spec)
    zeros = keras.tree.map_structure(
        lambda s: tf.zeros([batch, *(d or 1 for d in s.shape[1:])], s.dtype), outputs
    )
    try:
        value = loss_fn(sample, targets, zeros, sample_weight)
        if value.shape.rank != 0:
            raise ValueError(f"the loss is not a scalar (shape {tuple(value.shape)})")
    except Exception as error:
        expected = keras.tree.map_structure(lambda s: tuple(s.shape), outputs)
        received = tf.nest.map_structure(lambda t: tuple(t.shape), targets)
        raise ValueError(
            f"Invalid value for argument `targets`. Received: targets of shape {received}. "
            f"Expected targets that the loss accepts for model outputs of shape {expected}. "
            f"{type(error).__name__}: {str(error).strip()[:400]}"
        ) from error


def as_target_tensors(targets: Any) -> Any:
    """Targets (array, tensor, dict, tuple or list) as a structure of tensors."""
    return tf.nest.map_structure(tf.convert_to_tensor, targets)
