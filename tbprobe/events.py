"""Read tbprobe runs from their event files into plain numpy data, without importing TensorFlow.

A run is a folder holding a `probe/` subfolder of TensorBoard event files
(`events.out.tfevents.*`, one per writer, e.g. one per `fit` call; all are read, oldest first);
`tbprobe.runs` finds and names runs.
Tags are `<layer>/<metric>`, where the layer path may itself contain `/` and the metric is the
last component: scalars (`sparsity`, `dead_units`, `mean`, `std`, `nonfinite`, ...), the
`activations` histogram (a `[k, 3]` float64 tensor of rows `(left_edge, right_edge, count)`),
images (skipped here) and the text summary `tbprobe/manifest`. The run's diagnosis
(`tbprobe/health`, `tbprobe/findings`) is not a layer and is skipped: `tbprobe.monitor.diagnose`
recomputes it from the scalars.

An event file is a sequence of TFRecords, little-endian::

    uint64 length | uint32 masked CRC-32C of length | payload | uint32 masked CRC-32C of payload

and each payload is a serialized `Event` proto. TensorBoard's `EventFileLoader` reads these
through TensorFlow when it is installed (a slow import), and its TensorFlow-free fallback
(`tensorflow_stub.pywrap_tensorflow.PyRecordReader_New`) checksums every byte in pure Python,
slowly, feature-map PNGs of up to megabytes included. So this module frames records
itself, checks the length CRC of every record and the payload CRC of every record whose values
it keeps (TensorBoard's `masked_crc32c`), skips image payloads unchecked, and decodes with
TensorBoard's protos, `data_compat` and `make_ndarray`.

Partial logs are expected (a crashed or still-running writer): a truncated last record ends the
file, a corrupt record is skipped, and both are described in `RunData.problems`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tbprobe.runs import PROBE_RUNS, event_files, find_runs, run_of
from tbprobe.tags import HISTOGRAM_METRIC, MANIFEST_TAG, PROBE_DIR, RUN_TAGS

_KEPT_PLUGINS = ("scalars", "histograms", "text")
_HEADER = struct.Struct("<QI")
_CRC = struct.Struct("<I")

Series = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class RunData:
    """What one run logged, as numpy arrays.

    Attributes:
        name: display name of the run.
        path: the run folder (the parent of `probe/`).
        scalars: `{layer: {metric: (steps, values)}}`; `steps` is a sorted int64 array without
            repeats (the value written last wins), `values` the float64 array beside it. Layers
            are in the order they were first logged (model order for tbprobe's writer).
        histograms: `{layer: (step, rows)}`: the `activations` histogram at the largest step
            (the one written last on ties), `rows` a `[k, 3]` float64 array of
            `(left_edge, right_edge, count)`.
        manifest: the latest `tbprobe/manifest` text, or None.
        problems: one line per truncated or corrupt part of an event file.
    """

    name: str
    path: Path
    scalars: dict[str, dict[str, Series]]
    histograms: dict[str, tuple[int, np.ndarray]]
    manifest: str | None = None
    problems: tuple[str, ...] = ()

    @property
    def layers(self) -> list[str]:
        """Every logged layer, in first-logged order."""
        return list(dict.fromkeys([*self.scalars, *self.histograms]))

    @property
    def empty(self) -> bool:
        """Whether the run holds no scalar and no histogram."""
        return not self.scalars and not self.histograms


def read_run(path: str | os.PathLike, name: str | None = None) -> RunData:
    """Read every event file of one run.

    Args:
        path: the run folder (holding `probe/`), or its `probe/` folder.
        name: display name; defaults to the folder name.

    Returns:
        The run's `RunData`; empty (see `RunData.empty`) when the files hold no tbprobe data.

    Raises:
        ValueError: `path` does not exist or has no `probe/` event files.

    Example:
        >>> run = read_run("runs/baseline")  # doctest: +SKIP
        >>> steps, values = run.scalars["conv1"]["dead_units"]
    """
    run = run_of(Path(path).expanduser(), PROBE_RUNS)
    files = event_files(run / PROBE_DIR)
    if not files:
        below = find_runs(path)  # raises if there is no run at all
        raise ValueError(
            f"{str(path)!r} is not a run folder: it has no {PROBE_DIR}/ event files, but "
            f"{len(below)} run(s) below it ({below[0]}, ...). Read those, or pass the parent "
            "to write_report, which reads every run below it."
        )
    reader = _RunReader()
    for file in files:
        reader.read_file(file)
    return reader.result(name or run.resolve().name, run)


class _RunReader:
    """Accumulates the events of a run's files, in writing order."""

    def __init__(self) -> None:
        self.scalars: dict[str, dict[str, dict[int, float]]] = {}
        self.histograms: dict[str, tuple[int, np.ndarray]] = {}
        self.manifest: tuple[int, str] | None = None
        self.plugins: dict[str, str] = {}  # v2 writers store metadata on a tag's first value only
        self.problems: list[str] = []

    def read_file(self, path: Path) -> None:
        from google.protobuf.message import DecodeError
        from tensorboard import data_compat
        from tensorboard.compat.proto import event_pb2
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

        for offset, payload, crc in _records(path, self.problems):
            try:
                event = event_pb2.Event.FromString(payload)
            except DecodeError:
                self.problems.append(f"{path.name}: unreadable record at byte {offset}, skipped")
                continue
            values = [data_compat.migrate_value(v) for v in event.summary.value]
            kept = [v for v in values if self._plugin(v) in (*_KEPT_PLUGINS, None)]
            if not kept:
                continue
            if masked_crc32c(payload) != crc:
                self.problems.append(f"{path.name}: corrupt record at byte {offset}, skipped")
                continue
            for value in kept:
                self._add(value, int(event.step))

    def _plugin(self, value) -> str | None:
        name = value.metadata.plugin_data.plugin_name
        if name:
            self.plugins.setdefault(value.tag, name)
        return self.plugins.get(value.tag)

    def _add(self, value, step: int) -> None:
        from tensorboard.util.tensor_util import make_ndarray

        array = make_ndarray(value.tensor)
        layer, _, metric = value.tag.rpartition("/")
        if value.tag == MANIFEST_TAG:
            text = array.reshape(-1)[0] if array.size else b""
            if self.manifest is None or step >= self.manifest[0]:
                self.manifest = step, text.decode("utf-8", "replace")
        elif not layer or value.tag in RUN_TAGS or array.dtype.kind not in "fiu":
            return
        elif array.ndim == 0:
            self.scalars.setdefault(layer, {}).setdefault(metric, {})[step] = float(array)
        elif metric == HISTOGRAM_METRIC and array.ndim == 2 and array.shape[1] == 3:
            last = self.histograms.get(layer)
            if last is None or step >= last[0]:
                self.histograms[layer] = step, array.astype(np.float64)

    def result(self, name: str, path: Path) -> RunData:
        scalars = {
            layer: {metric: _series(points) for metric, points in metrics.items()}
            for layer, metrics in self.scalars.items()
        }
        manifest = self.manifest[1] if self.manifest else None
        return RunData(name, path, scalars, self.histograms, manifest, tuple(self.problems))


def _series(points: dict[int, float]) -> Series:
    steps = np.array(sorted(points), dtype=np.int64)
    return steps, np.array([points[s] for s in steps.tolist()], dtype=np.float64)


def _records(path: Path, problems: list[str]) -> Iterator[tuple[int, bytes, int]]:
    """`(offset, payload, payload_crc)` of each complete record; notes where reading stopped."""
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    with open(path, "rb") as file:
        offset = 0
        while header := file.read(_HEADER.size):
            if len(header) < _HEADER.size:
                break
            length, length_crc = _HEADER.unpack(header)
            if masked_crc32c(header[:8]) != length_crc:
                problems.append(
                    f"{path.name}: corrupt record header at byte {offset}; rest skipped"
                )
                return
            payload = file.read(length)
            crc = file.read(_CRC.size)
            if len(payload) < length or len(crc) < _CRC.size:
                break
            yield offset, payload, _CRC.unpack(crc)[0]
            offset += _HEADER.size + length + _CRC.size
        else:
            return
    problems.append(
        f"{path.name}: truncated after byte {offset} (a crashed or still-running writer); "
        f"read the records before it"
    )
