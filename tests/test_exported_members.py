"""The public API: one sorted `__all__`, every name of which resolves (as httpx tests it)."""

from __future__ import annotations

import pytest

import tbprobe


def test_all_is_sorted() -> None:
    assert sorted(tbprobe.__all__) == tbprobe.__all__


@pytest.mark.parametrize("name", tbprobe.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    member = getattr(tbprobe, name)
    assert (member.__module__, member.__name__) == (tbprobe._HOMES[name], name)
    assert name in dir(tbprobe)
