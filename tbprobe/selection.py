"""Which layers to probe: layer paths, and the `layers=` argument that picks among them.

A *layer path* names a layer by where it sits: `conv1` for a layer of the model itself,
`encoder/conv1` for a layer `conv1` inside a nested model `encoder`, and the same for the sublayers
of any layer: `encoder/block_0/attention/query` is the query projection of the
`MultiHeadAttention` `attention` of the custom layer `block_0`. Keras 3 forbids `/` in layer
names, so a path is unambiguous; two sibling sublayers with the same name (possible below a
model) are told apart by a suffix, `dense` and `dense_1`. Paths are what tbprobe's TensorBoard
tags start with. A path's *depth* is its number of parts: 1 for the model's own layers.

`layers=` accepts:

* `None`: every layer except `InputLayer`s, recursing into nested models and into the sublayers
  of every layer (a block is probed beside its own sublayers). Two exceptions: the `Softmax` and
  `Dropout` inside a `MultiHeadAttention` (their output is the attention probabilities, logged
  as `<attention>/attention`); and sublayers that never run, or run inside a loop of their
  parent's `call` (an RNN's cell), are left out silently.
* a list (or a single item) mixing:
    * exact layer paths or names, `"conv1"`, `"encoder/conv1"`;
    * glob patterns, `"conv*"`, `"encoder/*"` (`fnmatch` syntax);
    * Keras layer classes, `keras.layers.Conv2D` (subclasses match too).

A string without `/` matches at any depth, the way `.gitignore` patterns do: `"conv*"` selects
`conv1` and `encoder/conv2`. A string with `/` matches whole paths only (`*` spans `/`:
`"block_0/*"` is everything inside `block_0`). A pattern or class picks a block's internals as
`None` does (the attention softmax and dropout apart, never-running ones silently left out);
an exact name or path is strict.
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
        layers: `{path: layer}` in model order (depth-first, a layer's sublayers after it).
        explicit: paths named by an exact name or path, and the model-level layers (not a
            block's internals) matched by a pattern or a class (empty for `None`). An explicitly
            chosen layer whose output cannot be probed is an error; an implicitly chosen one is
            skipped with a warning, or silently for a block's internals.
    """

    layers: dict[str, Any]
    explicit: frozenset[str] = field(default_factory=frozenset)
    internal: frozenset[str] = field(default_factory=frozenset)
    """Paths of sublayers of a layer that is not a model (a block's internals): when chosen
    implicitly, they are left out silently if they never run or run inside a loop."""
    ancestors: dict[str, Any] = field(default_factory=dict)
    """`{path: layer}` of the layers holding a chosen layer (its parent, grandparent, ...)."""


def sublayers(layer: Any) -> list[Any]:
    """The layers `layer` holds directly: attributes, and items of attribute lists and dicts.

    A model's are its public `layers`. Keras 3 has no public equivalent for other layers, so
    this reads the private `_flatten_layers`, the very method `Model.layers` is built on
    (`keras/src/layers/layer.py`), kept here alone so that a Keras change breaks one place.
    """
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    return list(layer._flatten_layers(include_self=False, recursive=False))


def layer_paths(model: Any, depth: int | None = None) -> dict[str, Any]:
    """Every probe-able layer of `model` by path, recursing into nested models and sublayers.

    Args:
        model: a built `keras.Model` (Sequential, Functional or subclassed).
        depth: deepest path depth kept (1 = the model's own layers), or None for every level.

    Returns:
        `{path: layer}` in depth-first model order (a layer before its sublayers). `InputLayer`s
        are left out. A layer object reachable along several paths (the same layer held by two
        blocks) keeps the first path only, because its calls are recorded once per call site
        anyway.
    """
    found: dict[str, Any] = {}
    seen: set[int] = {id(model)}

    def visit(container: Any, prefix: str, level: int) -> None:
        names: set[str] = set()
        for layer in sublayers(container):
            if isinstance(layer, keras.layers.InputLayer) or id(layer) in seen:
                continue
            seen.add(id(layer))
            name = _unique_name(layer.name, names)
            path = f"{prefix}{name}"
            found[path] = layer
            if depth is None or level < depth:
                visit(layer, f"{path}/", level + 1)

    visit(model, "", 1)
    return found


def check_depth(depth: Any) -> int | None:
    """Validate a `depth=` argument: None or a positive int.

    Raises:
        ValueError: `depth` is not None and not a positive integer.
    """
    if depth is None or (isinstance(depth, int) and not isinstance(depth, bool) and depth > 0):
        return depth
    raise ValueError(
        f"Invalid value for argument `depth`. Received: depth={depth!r}. Expected None (every "
        "level) or a positive integer (1 = the model's own layers, 2 = one level inside, ...)."
    )


def resolve_selection(
    model: Any, layers: LayerSpec | Iterable[LayerSpec] | None, depth: int | None = None
) -> Selection:
    """Resolve a `layers=` argument against `model`'s layer paths.

    Args:
        model: a built `keras.Model`.
        layers: `None`, or one or several names, paths, glob patterns or Keras layer classes.
        depth: deepest path depth considered (see `layer_paths`), or None for every level.

    Returns:
        The `Selection`, in model order whatever the order of `layers`.

    Raises:
        TypeError: an item is neither a string nor a Keras layer class.
        ValueError: an item matches no layer; the message lists the closest real paths.
    """
    available = layer_paths(model, check_depth(depth))
    internal = frozenset(_internal_paths(model, available))
    if layers is None:
        every = {
            p: layer for p, layer in available.items() if not _duplicates_attention(p, available)
        }
        return Selection(every, internal=internal, ancestors=_ancestors(every, available))
    specs = _as_spec_list(layers)
    chosen: set[str] = set()
    named: set[str] = set()
    for spec in specs:
        matches = {path for path, layer in available.items() if _matches(spec, path, layer)}
        if not matches:
            raise ValueError(_no_match_message(spec, layers, available))
        if isinstance(spec, str) and _is_glob(spec):
            matches = {path for path in matches if not _duplicates_attention(path, available)}
        elif isinstance(spec, str):
            named |= matches
        chosen |= matches
    ordered = {path: layer for path, layer in available.items() if path in chosen}
    # A block's internals caught by a pattern or a class are chosen as by `None`; a model's
    # layers, and anything named exactly, must be probe-able.
    explicit = frozenset(path for path in ordered if path in named or path not in internal)
    return Selection(ordered, explicit, internal, _ancestors(ordered, available))


def _is_glob(spec: str) -> bool:
    return any(char in spec for char in "*?[")


def _ancestors(chosen: dict[str, Any], available: dict[str, Any]) -> dict[str, Any]:
    prefixes = {path.rsplit("/", k)[0] for path in chosen for k in range(1, path.count("/") + 1)}
    return {path: layer for path, layer in available.items() if path in prefixes}


def _unique_name(name: str, taken: set[str]) -> str:
    """`name`, or `name_<k>` with the smallest free k when a sibling already has that name."""
    unique, k = name, 0
    while unique in taken:
        k += 1
        unique = f"{name}_{k}"
    taken.add(unique)
    return unique


def _parent(path: str, available: dict[str, Any], model: Any) -> Any:
    return available[path.rsplit("/", 1)[0]] if "/" in path else model


def _internal_paths(model: Any, available: dict[str, Any]) -> Iterable[str]:
    """Paths whose parent is a layer that is not a model."""
    return (p for p in available if not isinstance(_parent(p, available, model), keras.Model))


def _duplicates_attention(path: str, available: dict[str, Any]) -> bool:
    """Whether `path` is the softmax or dropout of a MultiHeadAttention: their output is the
    attention probabilities, which the attention layer's own `/attention` output already logs."""
    if "/" not in path:
        return False
    parent = available[path.rsplit("/", 1)[0]]
    layer = available[path]
    return isinstance(parent, keras.layers.MultiHeadAttention) and isinstance(
        layer, (keras.layers.Softmax, keras.layers.Dropout)
    )


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
