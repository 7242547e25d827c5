from __future__ import annotations

import keras
import pytest

from tbprobe.selection import layer_paths, resolve_selection


@pytest.fixture(scope="module")
def nested() -> keras.Model:
    encoder = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4, name="conv_a"), keras.layers.Dense(3, name="d")],
        name="encoder",
    )
    inputs = keras.Input((6,), name="x")
    h = encoder(inputs)
    h = keras.layers.Dense(2, name="conv_top")(h)
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(h), name="net")


def test_layer_paths_recurse_and_skip_inputs(nested):
    assert list(layer_paths(nested)) == [
        "encoder",
        "encoder/conv_a",
        "encoder/d",
        "conv_top",
        "head",
    ]


def test_none_selects_everything_implicitly(nested):
    selection = resolve_selection(nested, None)
    assert list(selection.layers) == list(layer_paths(nested))
    assert selection.explicit == frozenset()


def test_names_globs_and_classes(nested):
    assert list(resolve_selection(nested, "head").layers) == ["head"]
    # A pattern without '/' matches at any depth, like .gitignore.
    assert list(resolve_selection(nested, "conv*").layers) == ["encoder/conv_a", "conv_top"]
    assert list(resolve_selection(nested, "encoder/*").layers) == ["encoder/conv_a", "encoder/d"]
    assert list(resolve_selection(nested, ["d"]).layers) == ["encoder/d"]
    chosen = resolve_selection(nested, [keras.layers.Dense, "encoder"])
    assert list(chosen.layers) == ["encoder", "encoder/conv_a", "encoder/d", "conv_top", "head"]
    assert chosen.explicit == frozenset(chosen.layers)
    models = resolve_selection(nested, keras.Sequential)
    assert list(models.layers) == ["encoder"]


def test_unknown_name_suggests_close_paths(nested):
    with pytest.raises(ValueError, match=r"'hed'.*Closest layer paths: 'head'.*select_layers"):
        resolve_selection(nested, ["hed"])
    with pytest.raises(ValueError, match=r"^Invalid value for argument `layers`\. Received: "):
        resolve_selection(nested, ["head", "nope"])
    with pytest.raises(ValueError, match=r"layers=\['head', 'nope'\]\. No layer matches 'nope'"):
        resolve_selection(nested, ["head", "nope"])


def test_class_matching_nothing(nested):
    with pytest.raises(ValueError, match=r"argument `layers`.*No layer of class Conv2D.*Dense"):
        resolve_selection(nested, keras.layers.Conv2D)


@pytest.mark.parametrize("bad", [[3], [object], [""]])
def test_bad_items_are_type_errors(nested, bad):
    with pytest.raises(TypeError, match="Invalid item in argument `layers`"):
        resolve_selection(nested, bad)


def test_empty_list_is_an_error(nested):
    with pytest.raises(ValueError, match="empty list selects nothing"):
        resolve_selection(nested, [])


class Holder(keras.layers.Layer):
    """Sublayers as an attribute, in a list and in a dict; two of them share a name."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = keras.layers.Dense(2, name="proj")
        self.items = [keras.layers.Dense(2, name="proj"), keras.layers.Dense(2, name="item")]
        self.by_key = {"gate": keras.layers.Dense(2, name="gate")}

    def call(self, x):
        return self.by_key["gate"](self.items[1](self.items[0](self.first(x))))


@pytest.fixture(scope="module")
def holder_model() -> keras.Model:
    inputs = keras.Input((2,))
    return keras.Model(inputs, Holder(name="holder")(inputs))


def test_sublayers_in_attributes_lists_and_dicts_with_unique_paths(holder_model):
    holder = holder_model.get_layer("holder")
    paths = layer_paths(holder_model)
    assert list(paths) == ["holder", "holder/proj", "holder/proj_1", "holder/item", "holder/gate"]
    assert paths["holder/proj"] is holder.first
    assert paths["holder/proj_1"] is holder.items[0]
    assert paths["holder/gate"] is holder.by_key["gate"]


def test_depth_and_internal_paths(holder_model, nested):
    assert list(layer_paths(holder_model, depth=1)) == ["holder"]
    assert list(layer_paths(nested, depth=1)) == ["encoder", "conv_top", "head"]
    selection = resolve_selection(holder_model, "gate")
    assert selection.internal == frozenset(
        ["holder/proj", "holder/proj_1", "holder/item", "holder/gate"]
    )
    assert list(selection.ancestors) == ["holder"]
    assert resolve_selection(nested, None).internal == frozenset()  # a model's layers are not


@pytest.mark.parametrize("depth", [0, -2, 2.0, False])
def test_bad_depth(nested, depth):
    with pytest.raises(ValueError, match=rf"Received: depth={depth!r}\. Expected None"):
        resolve_selection(nested, None, depth)


def test_patterns_and_classes_pick_internals_as_none_does(holder_model):
    from transformer_models import encoder

    model = encoder(blocks=1)
    chosen = resolve_selection(model, ["block_0", "block_0/*"])
    none = resolve_selection(model, None)
    assert list(chosen.layers) == [p for p in none.layers if p.startswith("block_0")]
    assert not any("softmax" in p or "dropout" in p for p in chosen.layers)
    assert chosen.explicit == frozenset(["block_0"])  # internals by pattern: not strict
    assert resolve_selection(holder_model, "holder/gate").explicit == frozenset(["holder/gate"])
    by_class = resolve_selection(holder_model, keras.layers.Dense)
    assert by_class.explicit == frozenset()
