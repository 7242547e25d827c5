"""A small thread-safe cache of values that stay valid while their data's version is unchanged.

The dashboard's overview of a metric for a run costs a read of every layer's series through the
data provider (the slow part of a request with many layers); the manifest's layer order costs a read
and a parse. Both depend only on data that TensorBoard reports a version of in its cheap
listings (the number of series, their last step and last wall time), so they are kept here under
that version and recomputed when it changes. Two threads asking for one key compute it once.

Example::

    cache = VersionedCache()
    matrix = cache.get(("run_0/probe", "sparsity"), version, lambda: read_matrix(...))
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")
MAX_ENTRIES = 512  # e.g. 10 runs x 15 metrics, several times over


class VersionedCache:
    """``key -> (version, value)``, the value recomputed when asked with another version."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: dict[Hashable, tuple[Hashable, Any]] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()
        self._max_entries = max_entries

    def get(self, key: Hashable, version: Hashable, compute: Callable[[], T]) -> T:
        """The value of `key` at `version`: cached, or `compute()` once and kept.

        Args:
            key: What the value is of, e.g. ``(run, metric)``.
            version: What the value was computed from, e.g. series counts and last wall times.
            compute: Computes the value; called at most once at a time per key.
        """
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == version:
                return entry[1]
            value = compute()
            with self._guard:
                if len(self._entries) >= self._max_entries:
                    self._entries.pop(next(iter(self._entries)))  # the oldest entry
                self._entries[key] = (version, value)
            return value
