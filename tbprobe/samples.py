"""The probe batch and the step, checked once: what a `Probe` is given besides the model.

`first_batch` takes the probe batch out of a `tf.data.Dataset` (its first batch's inputs),
`batch_tensors` checks it is a batch, `as_step` checks a step, and `writes_summaries` says
whether this process writes at all under a `tf.distribute` strategy (the chief only).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf


def first_batch(sample: Any) -> Any:
    """The probe batch: `sample` itself, or the inputs of a dataset's first batch."""
    if sample is None:
        raise ValueError(
            "Missing argument `sample`: tbprobe needs a fixed probe batch, e.g. sample=x_val[:16] "
            "(an array, tensor, dict or tuple of model inputs) or a tf.data.Dataset."
        )
    if isinstance(sample, tf.data.Dataset):
        for batch in sample.take(1):
            inputs, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
            return inputs
        raise ValueError("Invalid value for argument `sample`: the dataset yielded no batch.")
    return sample


def batch_tensors(sample: Any) -> Any:
    """The probe batch as tensors (same structure).

    Raises:
        ValueError: a tensor that is not a batch of at least one sample.
    """
    tensors = tf.nest.map_structure(tf.convert_to_tensor, sample)
    for tensor in tf.nest.flatten(tensors):
        if tensor.shape.rank == 0 or tensor.shape[0] == 0:
            raise ValueError(
                f"Invalid value for argument `sample`: expected a batch (first axis = samples) "
                f"with at least one sample. Received a tensor of shape {tuple(tensor.shape)}."
            )
    return tensors


def writes_summaries(model: Any) -> bool:
    """Whether this process writes `model`'s logs: False on the non-chief workers of a multi-worker strategy: only the chief writes."""
    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    return bool(strategy.extended.should_save_summary)


def as_step(step: Any) -> int:
    """`step` as a non-negative int (a Python int or an integer tensor or variable).

    Raises:
        TypeError: anything else, a bool included.
    """
    if isinstance(step, bool):
        raise TypeError(f"Invalid step: received {step!r}; expected an integer step.")
    try:
        value = np.asarray(step.numpy() if hasattr(step, "numpy") else step)
    except Exception:
        value = np.asarray(None)
    if value.shape != () or not np.issubdtype(value.dtype, np.integer) or int(value) < 0:
        raise TypeError(
            f"Invalid step: received {step!r}. Expected a non-negative integer (a Python int, "
            "or an integer tf.Variable such as optimizer.iterations)."
        )
    return int(value)
