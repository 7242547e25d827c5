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
