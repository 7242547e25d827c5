"""The probe model (`ProbeModel`, `probe_model`, `select_layers`): one Keras model that returns the
outputs of the selected layers of another.

`probe_model(model)` works on every kind of Keras 3 model, including the cases where
`model.get_layer(name).output` does not: subclassed models (no symbolic outputs), layers inside
nested models ("Graph disconnected") and layers called at several places (`.output` silently
returns the first call only).

How: while the probe model runs the original model, each selected layer's `call` is shadowed
by one that records its outputs (`tbprobe.recording`), and each selected attention layer is asked
for its probabilities. The record is made during tracing, so inside a `tf.function` the patch
exists only while the graph is built; the compiled graph simply returns those intermediate
tensors. Outside a probe call the layers are untouched: the original model keeps its outputs,
training and saving.

Tags (see `tbprobe.recording`): `encoder/conv1`, `shared/call_0`, `lstm/1`, and
`block/attention/attention` for the probabilities of the attention layer `block/attention`.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from tbprobe.recording import (
    ACTIVATION,
    RecordedCall,
    call_tags,
    is_attention,
    recording_calls,
    tagged_tensors,
)
from tbprobe.selection import LayerSpec, Selection, resolve_selection

FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})


@dataclass(frozen=True)
class ProbedOutput:
    """One probed tensor: a single output of a single call of a layer.

    Attributes:
        tag: the TensorBoard tag prefix, e.g. `"encoder/conv1"`, `"lstm/1"`, `"shared/call_0"`.
        path: the layer path, e.g. `"encoder/conv1"`.
        layer: the Keras layer object (shared with the probed model).
        shape: the output shape; `None` for dimensions unknown when traced (the batch).
        dtype: the output dtype name, e.g. `"float32"`.
        kind: `"activation"` for what a layer returned; `"attention"` for the probabilities
            `(batch, heads, queries, keys)` of an attention layer, tag `<layer tag>/attention`.
    """

    tag: str
    path: str
    layer: Any
    shape: tuple[int | None, ...]
    dtype: str
    kind: str = ACTIVATION


Consume = Callable[[ProbedOutput, Any, Any], list[Any]]
"""`consume(output, tensor, mask) -> ops` of `ProbeModel.run_consuming`: `mask` is the attention
key mask (broadcastable to `[batch, queries, keys]`, True = attended) for an `"attention"`
output, else None."""


def select_layers(
    model: Any,
    layers: LayerSpec | Iterable[LayerSpec] | None = None,
    sample: Any = None,
    depth: int | None = None,
) -> list[ProbedOutput]:
    """List what would be probed: one entry per output of each call of each selected layer.

    Args:
        model: a built `keras.Model` (Sequential, Functional, nested or subclassed).
        layers: `None` for every layer, or names, paths, glob patterns and Keras layer classes
            (see `tbprobe.selection`).
        sample: an input batch (array, tensor, dict or tuple). Needed only for a subclassed model
            whose input shape Keras did not record; with it, shapes include the batch size.
        depth: deepest layer-path depth probed: 1 = the model's own layers, 2 = one level
            inside them (a block's sublayers, a nested model's layers), ...; None = every level.

    Returns:
        `ProbedOutput`s in model order (the order layers are called in the forward pass); an
        attention layer's probabilities (kind `"attention"`) follow its output.

    Raises:
        ValueError: unbuilt model, a name or pattern matching nothing, a bad `depth`, or an
            explicitly selected layer that is never called or whose output is not a dense
            float tensor.

    Example:
        >>> for out in tbprobe.select_layers(model, ["conv*"]):
        ...     print(out.tag, out.shape)
    """
    return _discover(model, resolve_selection(_check_model(model), layers, depth), sample)[0]


def probe_model(
    model: Any,
    layers: LayerSpec | Iterable[LayerSpec] | None = None,
    sample: Any = None,
    depth: int | None = None,
) -> ProbeModel:
    """Build, once, a model that returns the outputs of the selected layers of `model`.

    The probe model shares `model`'s layers and weights (nothing is copied), so after training
    steps it returns the activations of the current weights. `model` itself is left unchanged.

    Args:
        model: a built `keras.Model` (Sequential, Functional, nested or subclassed).
        layers: `None` for every layer, or names, paths, glob patterns and Keras layer classes.
        sample: optional input batch; needed only for a subclassed model whose input shape Keras
            did not record.
        depth: deepest layer-path depth probed (1 = the model's own layers), None = every level.

    Returns:
        A `ProbeModel`. Called on a batch it returns `{tag: tensor}` in model order, run with
        `training=False` unless told otherwise; attention probabilities under
        `"<tag>/attention"`.

    Raises:
        ValueError: as for `select_layers`.

    Example:
        >>> probe = tbprobe.probe_model(model, layers=["conv*", keras.layers.Dense])
        >>> activations = probe(x_batch)  # {"conv1": <tf.Tensor ...>, "dense": ...}
    """
    selection = resolve_selection(_check_model(model), layers, depth)
    return ProbeModel(model, selection, *_discover(model, selection, sample))


class ProbeModel(keras.Model):
    """A Keras model returning `{tag: tensor}` for the probed layers of another model.

    Build it with `tbprobe.probe_model`. Attributes: `probed_model` (the original model) and
    `probed_outputs` (the `ProbedOutput`s it returns, in order).
    """

    def __init__(
        self, model: Any, selection: Selection, outputs: list[ProbedOutput], calls: Counter[str]
    ):
        super().__init__(name=f"{model.name}_probe", dtype=model.dtype_policy)
        self.probed_model = model
        self.probed_outputs = list(outputs)
        self._selection = selection
        self._outputs = {out.tag: out for out in outputs}
        self._calls = calls

    def call(self, inputs: Any, training: bool = False) -> dict[str, Any]:
        with _recording(self._selection) as records:
            self.probed_model(inputs, training=training)
        return {t.tag: t.tensor for t in tagged_tensors(records) if t.tag in self._outputs}

    def run_consuming(self, inputs: Any, consume: Consume, training: bool = False) -> Any:
        """Run the model, handing each probed output to `consume(output, tensor, mask)` as it
        is made (`output` a `ProbedOutput`, `mask` see `Consume`).

        The rest of the forward pass waits for the ops `consume` returns, so that each
        activation is used up and freed before the next layer runs: in a graph, memory stays
        near that of the plain forward pass instead of holding every activation at once.

        Returns:
            The probed model's own outputs (e.g. for a loss and its gradients).
        """
        seen: Counter[str] = Counter()

        def transform(call: RecordedCall) -> Any:
            tagged = call_tags(call, seen[call.path], self._calls[call.path])
            seen[call.path] += 1
            done = [
                op
                for t in tagged
                if t.tag in self._outputs
                for op in consume(self._outputs[t.tag], t.tensor, t.mask)
            ]
            if not done:
                return call.outputs
            with tf.control_dependencies(done):
                return tf.nest.map_structure(
                    lambda t: tf.identity(t) if tf.is_tensor(t) else t, call.outputs
                )

        with _recording(self._selection, transform):
            return self.probed_model(inputs, training=training)


def _recording(selection: Selection, transform: Any = None) -> Any:
    """`recording_calls` for a selection: the attention layers made explicit are those selected
    and those holding a selected sublayer, so that their internals run as they will be probed."""
    watched = {**selection.ancestors, **selection.layers}
    attention = [layer for layer in watched.values() if is_attention(layer)]
    return recording_calls(selection.layers, transform, attention)


def _check_model(model: Any) -> Any:

    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Expected a keras.Model. Received: {type(model).__module__}.{type(model).__name__}. "
            "tbprobe works on Keras 3 models (Sequential, Functional or subclassed)."
        )
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built yet, so its layers have no outputs to probe. "
            "Call it once on a batch (model(x[:1])), build it with an input shape "
            "(model.build((None, 28, 28, 1))), or start it with keras.Input."
        )
    return model


def _unprobeable_reason(leaf: Any, graph: Any) -> str | None:
    """Why a recorded output cannot be probed, or None when it can."""

    if leaf is None or not hasattr(leaf, "dtype") or not hasattr(leaf, "shape"):
        return f"output is not a tensor ({type(leaf).__name__})"
    if isinstance(leaf, (tf.RaggedTensor, tf.SparseTensor)) or getattr(leaf, "sparse", False):
        return f"output is a {type(leaf).__name__}, not a dense tensor"
    dtype = keras.backend.standardize_dtype(leaf.dtype)
    if dtype not in FLOAT_DTYPES:
        return f"output dtype is {dtype}, not a float type"
    if isinstance(leaf, tf.Tensor) and getattr(leaf, "graph", graph) is not graph:
        return LOOP_REASON
    return None


LOOP_REASON = "output is computed inside a loop or branch of the model's call()"


def _discover(
    model: Any, selection: Selection, sample: Any
) -> tuple[list[ProbedOutput], Counter[str]]:
    """Trace the forward pass once: every probe-able output of the selection, and the number
    of calls of each selected layer."""
    spec = input_spec(model) if sample is None else spec_of(sample)
    traced: list[tuple[Any, str | None]] = []
    called: Counter[str] = Counter()

    @tf.function(autograph=False)
    def forward(inputs: Any) -> None:
        graph = tf.compat.v1.get_default_graph()
        traced.clear()  # a trace may run more than once
        with _recording(selection) as records:
            model(inputs, training=False)
        called.clear()  # a trace may run more than once
        called.update(record.path for record in records)
        for tagged in tagged_tensors(records):
            traced.append((tagged, _unprobeable_reason(tagged.tensor, graph)))

    try:
        forward.get_concrete_function(spec)
    except Exception as error:
        detail = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
        raise ValueError(
            f"Invalid value for argument `sample`: could not run model {model.name!r} on inputs "
            f"{_describe_spec(spec)}. Expected the model's inputs "
            f"({_describe_spec(_declared_spec(model))}). {type(error).__name__}: {detail}"
        ) from error
    if sample is not None:
        _check_sample_dtypes(model, spec)

    found: list[ProbedOutput] = []
    skipped: list[str] = []
    # A block's sublayer that runs inside a loop of the block (an RNN's cell, whose first call
    # Keras also makes outside the loop to learn its output shape) is internal machinery.
    looped = {tagged.path for tagged, reason in traced if reason == LOOP_REASON}
    silent = (looped & selection.internal) - selection.explicit
    for tagged, reason in traced:
        path = tagged.path
        if path in silent:
            continue
        if reason is None:
            layer = selection.layers[path]
            shape, dtype = tuple(tagged.tensor.shape), tagged.tensor.dtype.name
            found.append(ProbedOutput(tagged.tag, path, layer, shape, dtype, tagged.kind))
        elif path in selection.explicit:
            raise ValueError(
                f"Layer {path!r} was selected explicitly but cannot be probed: {reason}. "
                "tbprobe probes dense float outputs; remove it from `layers=`."
            )
        else:
            skipped.append(f"{tagged.tag} ({reason})")
    never_called = [path for path in selection.layers if path not in called]
    if explicit := [path for path in never_called if path in selection.explicit]:
        raise ValueError(
            f"Selected layers {explicit} are never called in the forward pass of model "
            f"{model.name!r}, so they have no output to probe. Remove them from `layers=`."
        )
    skipped.extend(
        f"{path} (never called in the forward pass)"
        for path in never_called
        if path not in selection.internal
    )
    if skipped:
        warnings.warn(
            f"tbprobe skips {len(skipped)} output(s) it cannot probe: {'; '.join(skipped)}.",
            stacklevel=3,
        )
    return found, called


def spec_of(sample: Any) -> Any:
    """`tf.TensorSpec` structure of a sample batch (arrays, tensors, dicts, tuples, lists)."""

    def leaf_spec(value: Any) -> Any:
        tensor = tf.convert_to_tensor(value)
        return tf.TensorSpec(tensor.shape, tensor.dtype)

    return tf.nest.map_structure(leaf_spec, sample)


def input_spec(model: Any) -> Any:
    """`tf.TensorSpec` structure of `model`'s inputs, batch dimension unknown.

    Raises:
        ValueError: the model is subclassed and Keras recorded no input shape for it.
    """
    spec = _declared_spec(model)
    if spec is None:
        raise ValueError(
            f"Cannot tell the input shape of model {model.name!r} (a subclassed model that was "
            "built without recording its input shape). Pass sample=<an input batch>."
        )
    return spec


def _declared_spec(model: Any) -> Any:

    try:
        symbolic = model.input
    except (AttributeError, ValueError):
        symbolic = None
    if symbolic is not None:
        return keras.tree.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), symbolic)
    shape = (model.get_build_config() or {}).get("input_shape")
    if shape is None:
        return None
    dtype = model.input_dtype

    def is_shape(value: Any) -> bool:
        return isinstance(value, (tuple, list)) and all(
            d is None or isinstance(d, int) for d in value
        )

    def to_spec(value: Any) -> Any:
        if is_shape(value):
            return tf.TensorSpec((None, *value[1:]), dtype)
        if isinstance(value, dict):
            return {key: to_spec(item) for key, item in value.items()}
        return type(value)(to_spec(item) for item in value)

    return to_spec(shape)


def _check_sample_dtypes(model: Any, spec: Any) -> None:
    """Raise when a sample holds strings where the model declares numbers, or the reverse.

    Keras casts each input to the dtype of its `keras.Input`; a cast between strings and
    numbers gets into the graph but has no kernel, so it would fail only at the first log.
    Runs after a successful trace, when the sample's structure is known to fit. Subclassed
    models declare no input dtypes and are not checked.
    """
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return
    names = [symbolic.name for symbolic in inputs]
    received = spec
    if isinstance(spec, dict) and not isinstance(model.input, dict) and set(names) <= set(spec):
        received = [spec[name] for name in names]  # as Keras does: a dict matched by name
    # Keras pairs the flattened sample with its inputs in order (zip).
    for symbolic, leaf in zip(inputs, tf.nest.flatten(received), strict=False):
        expected = keras.backend.standardize_dtype(symbolic.dtype)
        if (leaf.dtype == tf.string) != (expected == "string"):
            raise ValueError(
                f"Invalid value for argument `sample`. Received: sample with dtype "
                f"{leaf.dtype.name} (shape={tuple(leaf.shape)}) for input {symbolic.name!r} of "
                f"model {model.name!r}. Expected dtype {expected} "
                f"(shape={tuple(symbolic.shape)}): Keras cannot cast between strings and "
                "numbers."
            )


def _describe_spec(spec: Any) -> str:

    if spec is None:
        return "unknown"
    return str(
        tf.nest.map_structure(lambda s: f"shape={tuple(s.shape)} dtype={s.dtype.name}", spec)
    )
