"""Recording the calls of chosen layers while a model runs, attention probabilities included.

Keras 3 has no forward hooks, but `Operation.__call__` looks up `self.call` at every call. While
`recording_calls` is active, each watched layer has an instance attribute `call` that calls the
class's `call` and records the outputs. The same goes for sublayers: a block's sublayers are
called from the block's `call`, through their own (shadowed) `call`.

A `keras.layers.MultiHeadAttention` with dropout 0 computes its output with a fused
`ops.dot_product_attention`: its probabilities never exist as a tensor. While recording, every
attention layer passed as `attention=` has its `_compute_attention` shadowed too (see
`_explicit_attention`): it is asked for the scores, which takes the explicit softmax path, and
hands its caller exactly what the caller asked for. The scores `(batch, heads, queries, keys)`
and the mask over keys are recorded with the attention layer's call.

Tags (`call_tags`): the layer path (`conv1`, `encoder/conv1`); `<path>/call_<k>` when a layer is
called at several places; `/<i>` (or `/<key>`) appended for each output of a layer with several
outputs, e.g. `lstm/0`, `lstm/1`; `<path>/attention` (`<path>/call_<k>/attention`) for the
probabilities of an attention layer.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from tbprobe.tags import ATTENTION

ACTIVATION = "activation"

_PATCH_LOCK = threading.RLock()
_MISSING = object()


@dataclass(frozen=True)
class RecordedCall:
    """One call of a watched layer.

    Attributes:
        path: the layer path.
        outputs: what the call returned (any structure of tensors).
        attention: for an attention layer, `(probabilities, key_mask)`: probabilities
            `[batch, heads, queries, keys]`, key mask broadcastable to `[batch, queries, keys]`
            (True = attended) or None; else None.
    """

    path: str
    outputs: Any
    attention: tuple[Any, Any] | None = None


@dataclass(frozen=True)
class TaggedTensor:
    """One probe-able tensor of a recorded call: `kind` is `ACTIVATION` or `ATTENTION`, `mask`
    the attention key mask (or None)."""

    tag: str
    path: str
    kind: str
    tensor: Any
    mask: Any = None


Transform = Callable[[RecordedCall], Any]
"""`transform(call) -> outputs`, applied to each recorded call; its result replaces the outputs
passed on to the rest of the model."""


def is_attention(layer: Any) -> bool:
    """Whether tbprobe records `layer`'s attention probabilities: a Keras `MultiHeadAttention`
    (or subclass, such as keras-hub's cached attention) without flash attention.

    Flash attention never forms the probabilities (and Keras 3.15's TensorFlow backend refuses
    to run it). Keras keeps the resolved setting (argument or
    `keras.config.enable_flash_attention()`) in the private `_flash_attention` only.
    """
    return isinstance(layer, keras.layers.MultiHeadAttention) and not layer._flash_attention


@contextlib.contextmanager
def recording_calls(
    layers: dict[str, Any],
    transform: Transform | None = None,
    attention: Iterable[Any] = (),
) -> Iterator[list[RecordedCall]]:
    """Record every call of the given layers made inside the block.

    Args:
        layers: `{path: layer}` to watch.
        transform: optional function of a `RecordedCall` whose result replaces the outputs
            passed on to the rest of the model (e.g. to make them wait for other ops).
        attention: attention layers (see `is_attention`) made to compute their probabilities
            explicitly; those also in `layers` record them.

    Yields:
        A list that fills with `RecordedCall`s in call order (outputs before `transform`).
    """
    records: list[RecordedCall] = []
    scores: list[tuple[Any, Any, Any]] = []  # (layer, probabilities, key mask), in call order
    saved: list[tuple[Any, str, Any]] = []

    def shadow(layer: Any, name: str, value: Any) -> None:
        saved.append((layer, name, vars(layer).get(name, _MISSING)))
        # An instance attribute shadows the class's method, which Keras looks up at every
        # call; object.__setattr__ keeps Keras's attribute tracking out of it.
        object.__setattr__(layer, name, value)

    with _PATCH_LOCK:
        try:
            for layer in attention:
                shadow(layer, "_compute_attention", _explicit_attention(layer, scores))
            for path, layer in layers.items():
                shadow(layer, "call", _recording(layer, path, records, scores, transform))
            yield records
        finally:
            for layer, name, previous in reversed(saved):
                if previous is _MISSING:
                    object.__delattr__(layer, name)
                else:
                    object.__setattr__(layer, name, previous)


def _recording(
    layer: Any,
    path: str,
    records: list[RecordedCall],
    scores: list[tuple[Any, Any, Any]],
    transform: Transform | None,
) -> Any:
    call = layer.call

    def recorded_call(*args: Any, **kwargs: Any) -> Any:
        start = len(scores)
        outputs = call(*args, **kwargs)
        own = [(probs, mask) for owner, probs, mask in scores[start:] if owner is layer]
        record = RecordedCall(path, outputs, own[0] if len(own) == 1 else None)
        records.append(record)
        return outputs if transform is None else transform(record)

    return recorded_call


def _explicit_attention(layer: Any, scores: list[tuple[Any, Any, Any]]) -> Any:
    """`layer._compute_attention` forced onto the path that returns the probabilities.

    `_compute_attention` is the hook Keras documents for subclasses ("Users can override this
    function"); keras-hub's cached attention calls it too, with keywords. The caller gets the
    scores only if it asked for them, so the layer's outputs keep their structure.
    """
    compute = layer._compute_attention

    def compute_attention(
        query: Any,
        key: Any,
        value: Any,
        attention_mask: Any = None,
        training: Any = None,
        return_attention_scores: bool = False,
        **kwargs: Any,
    ) -> Any:
        output, probs = compute(
            query, key, value, attention_mask, training, return_attention_scores=True, **kwargs
        )
        if probs is not None and len(probs.shape) == 4:
            mask = attention_mask
            if kwargs.get("use_causal_mask") and mask is None:
                # Keras passes use_causal_mask only with no other mask; queries attend to the
                # keys at or before their own position.
                mask = tf.linalg.band_part(tf.ones(tf.shape(probs)[-2:], tf.bool), -1, 0)[None]
            scores.append((layer, probs, mask))
        return output, (probs if return_attention_scores else None)

    return compute_attention


def call_tags(call: RecordedCall, index: int, calls: int) -> list[TaggedTensor]:
    """The tagged tensors of call number `index` of `calls` of a layer."""
    base = call.path if calls == 1 else f"{call.path}/call_{index}"
    tagged = [
        TaggedTensor(
            f"{base}/{'/'.join(map(str, key))}" if key else base, call.path, ACTIVATION, leaf
        )
        for key, leaf in keras.tree.flatten_with_path(call.outputs)
        if leaf is not None  # e.g. an attention cache not asked for: nothing to probe
    ]
    if call.attention is not None:
        probs, mask = call.attention
        tagged.append(TaggedTensor(f"{base}/{ATTENTION}", call.path, ATTENTION, probs, mask))
    return tagged


def tagged_tensors(records: list[RecordedCall]) -> Iterator[TaggedTensor]:
    """Every tagged tensor of every recorded call, in call order."""
    calls: dict[str, int] = {}
    for record in records:
        calls[record.path] = calls.get(record.path, 0) + 1
    seen: dict[str, int] = {}
    for record in records:
        yield from call_tags(record, seen.get(record.path, 0), calls[record.path])
        seen[record.path] = seen.get(record.path, 0) + 1
