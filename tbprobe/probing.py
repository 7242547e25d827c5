"""The probe model (`ProbeModel`, `probe_model`, `select_layers`): one Keras model that returns the
outputs of the selected layers of another.

`probe_model(model)` works on every kind of Keras 3 model, including the cases where
`model.get_layer(name).output` does not: subclassed models (no symbolic outputs), layers inside
nested models ("Graph disconnected") and layers called at several places (`.output` silently
returns the first call only).

How: Keras 3 has no forward hooks, but `Operation.__call__` looks up `self.call` at every call.
While the probe model runs the original model, each selected layer gets an instance attribute
`call` that calls the class's `call` and records the outputs (`recording_calls`). The record is
made during tracing, so inside a `tf.function` the patch exists only while the graph is built;
the compiled graph simply returns those intermediate tensors. Outside a probe call the layers
are untouched: the original model keeps its outputs, training and saving.

Tags: the layer path (`conv1`, `encoder/conv1`); `<path>/call_<k>` when a layer is called at
several places; `/<i>` (or `/<key>`) appended for each output of a layer with several outputs,
e.g. `lstm/0`, `lstm/1`, `lstm/2` for an LSTM with `return_state=True`.
"""

from __future__ import annotations

import contextlib
import re
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from tbprobe.selection import LayerSpec, Selection, resolve_selection

FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})

_PATCH_LOCK = threading.RLock()
_MISSING = object()


@dataclass(frozen=True)
class ProbedOutput:
    """One probed tensor: a single output of a single call of a layer.

    Attributes:
        tag: the TensorBoard tag prefix, e.g. `"encoder/conv1"`, `"lstm/1"`, `"shared/call_0"`.
        path: the layer path, e.g. `"encoder/conv1"`.
        layer: the Keras layer object (shared with the probed model).
        shape: the output shape; `None` for dimensions unknown when traced (the batch).
        dtype: the output dtype name, e.g. `"float32"`.
    """

    tag: str
    path: str
    layer: Any
    shape: tuple[int | None, ...]
    dtype: str


Transform = Callable[[str, Any], Any]
"""`transform(path, outputs) -> outputs`, applied to each recorded call's outputs."""


@contextlib.contextmanager
def recording_calls(
    layers: dict[str, Any], transform: Transform | None = None
) -> Iterator[list[tuple[str, Any]]]:
    """Record every call of the given layers made inside the block.

    Args:
        layers: `{path: layer}` to watch.
        transform: optional function of `(path, outputs)` whose result replaces the outputs
            passed on to the rest of the model (e.g. to make them wait for other ops).

    Yields:
        A list that fills with `(path, outputs)` in call order (outputs before `transform`).
    """
    records: list[tuple[str, Any]] = []
    saved: list[tuple[Any, Any]] = []
    with _PATCH_LOCK:
        try:
            for path, layer in layers.items():
                saved.append((layer, vars(layer).get("call", _MISSING)))
                # Keras 3 offers no forward hook; an instance attribute shadows the class's
                # `call`, which Operation.__call__ looks up on every call. object.__setattr__
                # keeps Keras's attribute tracking out of it.
                wrapper = _recording(layer.call, path, records, transform)
                object.__setattr__(layer, "call", wrapper)
            yield records
        finally:
            for layer, previous in reversed(saved):
                if previous is _MISSING:
                    object.__delattr__(layer, "call")
                else:
                    object.__setattr__(layer, "call", previous)


def _recording(
    call: Any, path: str, records: list[tuple[str, Any]], transform: Transform | None
) -> Any:
    def recorded_call(*args: Any, **kwargs: Any) -> Any:
        outputs = call(*args, **kwargs)
        records.append((path, outputs))
        return outputs if transform is None else transform(path, outputs)

    return recorded_call


def call_tags(path: str, index: int, calls: int, outputs: Any) -> list[tuple[str, Any]]:
    """`(tag, leaf)` for each output leaf of call number `index` of `calls` of layer `path`."""
    base = path if calls == 1 else f"{path}/call_{index}"
    return [
        (f"{base}/{'/'.join(map(str, key))}" if key else base, leaf)
        for key, leaf in keras.tree.flatten_with_path(outputs)
    ]


def select_layers(
    model: Any,
    layers: LayerSpec | Iterable[LayerSpec] | None = None,
    sample: Any = None,
) -> list[ProbedOutput]:
    """List what would be probed: one entry per output of each call of each selected layer.

    Args:
        model: a built `keras.Model` (Sequential, Functional, nested or subclassed).
        layers: `None` for every layer, or names, paths, glob patterns and Keras layer classes
            (see `tbprobe.selection`).
        sample: an input batch (array, tensor, dict or tuple). Needed only for a subclassed model
            whose input shape Keras did not record; with it, shapes include the batch size.

    Returns:
        `ProbedOutput`s in model order (the order layers are called in the forward pass).

    Raises:
        ValueError: unbuilt model, a name or pattern matching nothing, or an explicitly selected
            layer that is never called or whose output is not a dense float tensor.

    Example:
        >>> for out in tbprobe.select_layers(model, ["conv*"]):
        ...     print(out.tag, out.shape)
    """
    return _discover(model, resolve_selection(_check_model(model), layers), sample)[0]


def probe_model(
    model: Any,
    layers: LayerSpec | Iterable[LayerSpec] | None = None,
    sample: Any = None,
) -> ProbeModel:
    """Build, once, a model that returns the outputs of the selected layers of `model`.

    The probe model shares `model`'s layers and weights (nothing is copied), so after training
    steps it returns the activations of the current weights. `model` itself is left unchanged.

    Args:
        model: a built `keras.Model` (Sequential, Functional, nested or subclassed).
        layers: `None` for every layer, or names, paths, glob patterns and Keras layer classes.
        sample: optional input batch; needed only for a subclassed model whose input shape Keras
            did not record.

    Returns:
        A `ProbeModel`. Called on a batch it returns `{tag: tensor}` in model order, run with
        `training=False` unless told otherwise.

    Raises:
        ValueError: as for `select_layers`.

    Example:
        >>> probe = tbprobe.probe_model(model, layers=["conv*", keras.layers.Dense])
        >>> activations = probe(x_batch)  # {"conv1": <tf.Tensor ...>, "dense": ...}
    """
    selection = resolve_selection(_check_model(model), layers)
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
        self._tags = frozenset(out.tag for out in outputs)
        self._calls = calls

    def call(self, inputs: Any, training: bool = False) -> dict[str, Any]:
        with recording_calls(self._selection.layers) as records:
            self.probed_model(inputs, training=training)
        return {tag: tensor for tag, _, tensor in _tagged_outputs(records) if tag in self._tags}

    def run_consuming(
        self, inputs: Any, consume: Callable[[str, Any], list[Any]], training: bool = False
    ) -> Any:
        """Run the model, handing each probed output to `consume(tag, tensor)` as it is made.

        The rest of the forward pass waits for the ops `consume` returns, so that each
        activation is used up and freed before the next layer runs: in a graph, memory stays
        near that of the plain forward pass instead of holding every activation at once.

        Returns:
            The probed model's own outputs (e.g. for a loss and its gradients).
        """
        seen: Counter[str] = Counter()

        def transform(path: str, outputs: Any) -> Any:
            tagged = call_tags(path, seen[path], self._calls[path], outputs)
            seen[path] += 1
            done = [op for tag, leaf in tagged if tag in self._tags for op in consume(tag, leaf)]
            if not done:
                return outputs
            with tf.control_dependencies(done):
                return tf.nest.map_structure(
                    lambda t: tf.identity(t) if tf.is_tensor(t) else t, outputs
                )

        with recording_calls(self._selection.layers, transform):
            return self.probed_model(inputs, training=training)


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


def _tagged_outputs(records: list[tuple[str, Any]]) -> Iterator[tuple[str, str, Any]]:
    """Yield `(tag, path, leaf)` for every output leaf of every recorded call."""
    calls = Counter(path for path, _ in records)
    seen: Counter[str] = Counter()
    for path, outputs in records:
        for tag, leaf in call_tags(path, seen[path], calls[path], outputs):
            yield tag, path, leaf
        seen[path] += 1


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
        return "output is computed inside a loop or branch of the model's call()"
    return None


def _discover(
    model: Any, selection: Selection, sample: Any
) -> tuple[list[ProbedOutput], Counter[str]]:
    """Trace the forward pass once: every probe-able output of the selection, and the number
    of calls of each selected layer."""
    spec = input_spec(model) if sample is None else spec_of(sample)
    traced: list[tuple[str, str, Any, str | None]] = []
    called: Counter[str] = Counter()

    @tf.function(autograph=False)
    def forward(inputs: Any) -> None:
        graph = tf.compat.v1.get_default_graph()
        traced.clear()  # a trace may run more than once
        with recording_calls(selection.layers) as records:
            model(inputs, training=False)
        called.clear()  # a trace may run more than once
        called.update(path for path, _ in records)
        for tag, path, leaf in _tagged_outputs(records):
            traced.append((tag, path, leaf, _unprobeable_reason(leaf, graph)))

    try:
        forward.get_concrete_function(spec)
    except Exception as error:
        detail = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
        raise ValueError(
            f"Could not run model {model.name!r} on inputs {_describe_spec(spec)}. The sample "
            f"must match the model's inputs ({_describe_spec(_declared_spec(model))}). "
            f"{type(error).__name__}: {detail}"
        ) from error

    found: list[ProbedOutput] = []
    skipped: list[str] = []
    for tag, path, leaf, reason in traced:
        if reason is None:
            found.append(
                ProbedOutput(tag, path, selection.layers[path], tuple(leaf.shape), leaf.dtype.name)
            )
        elif path in selection.explicit:
            raise ValueError(
                f"Layer {path!r} was selected explicitly but cannot be probed: {reason}. "
                "tbprobe probes dense float outputs; remove it from `layers=`."
            )
        else:
            skipped.append(f"{tag} ({reason})")
    never_called = [path for path in selection.layers if path not in called]
    if explicit := [path for path in never_called if path in selection.explicit]:
        raise ValueError(
            f"Selected layers {explicit} are never called in the forward pass of model "
            f"{model.name!r}, so they have no output to probe. Remove them from `layers=`."
        )
    skipped.extend(f"{path} (never called in the forward pass)" for path in never_called)
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


def _describe_spec(spec: Any) -> str:

    if spec is None:
        return "unknown"
    return str(
        tf.nest.map_structure(lambda s: f"shape={tuple(s.shape)} dtype={s.dtype.name}", spec)
    )
