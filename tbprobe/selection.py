"""Which layers to probe: layer paths, and the `layers=` argument that picks among them.

A *layer path* names a layer by where it sits: `conv1` for a layer of the model itself,
`encoder/conv1` for a layer `conv1` inside a nested model `encoder`. Keras 3 forbids `/` in layer
names, so a path is unambiguous. Paths are what tbprobe's TensorBoard tags start with.

`layers=` accepts:

* `None`: every layer except `InputLayer`s, recursing into nested models (the nested model itself
  is a layer too, and is probed beside its own layers).
* a list (or a single item) mixing:
    * exact layer paths or names, `"conv1"`, `"encoder/conv1"`;
    * glob patterns, `"conv*"`, `"encoder/*"` (`fnmatch` syntax);
    * Keras layer classes, `keras.layers.Conv2D` (subclasses match too).

A string without `/` matches at any depth, the way `.gitignore` patterns do: `"conv*"` selects
`conv1` and `encoder/conv2`. A string with `/` matches whole paths only.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import keras

LayerSpec = str | type
"""One item of `layers=`: a name, a path, a glob pattern, or a Keras layer class."""


@dataclass(frozen=True)
class Selection:
    """The layers chosen by a `layers=` argument.

    Attributes:
        layers: `{path: layer}` in model order (depth-first, a nested model's layers after it).
        explicit: paths named by an exact name or path, a pattern or a class (empty for `None`).
            An explicitly chosen layer whose output cannot be probed is an error; an implicitly
            chosen one is skipped with a warning.
    """

    layers: dict[str, Any]
    explicit: frozenset[str] = field(default_factory=frozenset)


def layer_paths(model: Any) -> dict[str, Any]:
    """Every probe-able layer of `model` by path, recursing into nested models.

    Args:
        model: a built `keras.Model` (Sequential, Functional or subclassed).

    Returns:
        `{path: layer}` in depth-first model order. `InputLayer`s are left out. A layer object
        reachable along several paths (rare: the same layer inside two nested models) keeps the
        first path only, because its calls are recorded once per call site anyway.
    """
    found: dict[str, Any] = {}
    seen: set[int] = set()

    def visit(container: Any, prefix: str) -> None:
        for layer in container.layers:
            if isinstance(layer, keras.layers.InputLayer) or id(layer) in seen:
                continue
            seen.add(id(layer))
            path = f"{prefix}{layer.name}"
            found[path] = layer
            if isinstance(layer, keras.Model):
                visit(layer, f"{path}/")

    visit(model, "")
    return found


def resolve_selection(model: Any, layers: LayerSpec | Iterable[LayerSpec] | None) -> Selection:
    """Resolve a `layers=` argument against `model`'s layer paths.

    Args:
        model: a built `keras.Model`.
        layers: `None`, or one or several names, paths, glob patterns or Keras layer classes.

    Returns:
        The `Selection`, in model order whatever the order of `layers`.

    Raises:
        TypeError: an item is neither a string nor a Keras layer class.
        ValueError: an item matches no layer; the message lists the closest real paths.
    """
    available = layer_paths(model)
    if layers is None:
        return Selection(layers=dict(available))
    specs = _as_spec_list(layers)
    chosen: set[str] = set()
    for spec in specs:
        matches = {path for path, layer in available.items() if _matches(spec, path, layer)}
        if not matches:
            raise ValueError(_no_match_message(spec, layers, available))
        chosen |= matches
    ordered = {path: layer for path, layer in available.items() if path in chosen}
    return Selection(layers=ordered, explicit=frozenset(ordered))


def _as_spec_list(layers: Any) -> list[LayerSpec]:
    if isinstance(layers, (str, type)):
        layers = [layers]
    try:
        specs = list(layers)
    except TypeError:
        raise TypeError(
            f"Invalid value for argument `layers`. Received: layers={layers!r}. Expected None, a "
            "layer name or glob pattern, a Keras layer class, or a list of those."
        ) from None
    if not specs:
        raise ValueError(
            "Invalid value for argument `layers`. Received: layers=[] (an empty list selects "
            "nothing). Pass None to probe every layer."
        )
    for spec in specs:
        if isinstance(spec, str) and spec:
            continue
        if isinstance(spec, type) and issubclass(spec, keras.layers.Layer):
            continue
        raise TypeError(
            f"Invalid item in argument `layers`. Received: {spec!r} of type "
            f"{type(spec).__name__}. Expected a layer name, a path like 'encoder/conv1', a glob "
            "pattern like 'conv*', or a Keras layer class like keras.layers.Conv2D."
        )
    return specs


def _matches(spec: LayerSpec, path: str, layer: Any) -> bool:
    if isinstance(spec, type):
        return isinstance(layer, spec)
    if "/" in spec:
        return fnmatch.fnmatchcase(path, spec)
    return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], spec)


def _no_match_message(spec: LayerSpec, layers: Any, available: dict[str, Any]) -> str:
    received = f"Invalid value for argument `layers`. Received: layers={layers!r}."
    if isinstance(spec, type):
        classes = sorted({type(layer).__name__ for layer in available.values()})
        return (
            f"{received} No layer of class {spec.__name__} in the model. Expected a class "
            f"present: {', '.join(classes)}. List every probe-able layer with "
            "tbprobe.select_layers(model)."
        )
    names = list(available) + sorted({path.rsplit("/", 1)[-1] for path in available})
    close = difflib.get_close_matches(spec, names, n=5, cutoff=0.5)
    hint = f" Closest layer paths: {', '.join(repr(c) for c in close)}." if close else ""
    return (
        f"{received} No layer matches {spec!r} in the model.{hint} Expected layer names, paths "
        "such as 'conv1' or 'encoder/conv1', or glob patterns. List every probe-able layer "
        "with tbprobe.select_layers(model)."
    )
