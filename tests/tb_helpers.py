"""Test helpers: event files read with TensorBoard's own reader, probed runs, TensorBoard's
HTTP API, processes."""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

LAYERS = ("conv1", "dense")
RUN_NAMES = ("baseline", "high_lr")


def tiny_cnn(learning_rate: float = 1e-2) -> Any:
    """Compiled Keras model: Input(8, 8, 3) -> Conv2D `conv1` -> Flatten -> Dense `dense`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(inputs)
    hidden = keras.layers.Flatten(name="flatten")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(2, name="dense")(hidden))
    model.compile(
        keras.optimizers.SGD(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def tiny_data() -> tuple[Any, Any]:
    """16 seeded 8x8 RGB images and binary labels."""
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.normal(size=(16, 8, 8, 3)).astype("float32"), rng.integers(0, 2, size=16)


def make_runs(root: Path) -> dict[str, Path]:
    """Two runs of a tiny probed training under `root`, written once and reused.

    `baseline` holds `probe/` and Keras's `train/` and `validation/`; `high_lr` holds `probe/`.
    Each `probe/` has log steps 0, 1, 2 of `conv1` (Conv2D, rank 4) and `dense` written by
    `tbprobe.Probe`; `high_lr/probe` holds them in two event files (steps 0-1, step 2).

    Returns:
        Run name -> run directory.
    """
    runs = {name: root / name for name in RUN_NAMES}
    if (root / "complete").exists():
        return runs
    import keras

    import tbprobe

    x, y = tiny_data()
    for name, learning_rate in zip(RUN_NAMES, (1e-2, 1.0), strict=True):
        model = tiny_cnn(learning_rate)
        callbacks = []
        if name == "baseline":
            callbacks.append(keras.callbacks.TensorBoard(runs[name], write_graph=False))
        validation = (x[:4], y[:4]) if callbacks else None
        # high_lr is logged by two Probes, as by two fit() calls: two event files in probe/.
        starts = (0,) if name == "baseline" else (0, 2)
        for first, last in zip(starts, (*starts[1:], 3), strict=True):
            with tbprobe.Probe(model, runs[name], sample=x[:2], layers=list(LAYERS)) as probe:
                for step in range(first, last):
                    model.fit(x, y, verbose=0, callbacks=callbacks, validation_data=validation)
                    probe.log(step)
    (root / "complete").touch()
    return runs


def make_long_run(run: Path, steps: int) -> Path:
    """A run of `steps` log steps of `tbprobe.Probe` on `tiny_cnn` (no training), made once."""
    if not (run / "complete").exists():
        import tbprobe

        x, _ = tiny_data()
        with tbprobe.Probe(tiny_cnn(), run, sample=x[:2], layers=["conv1"]) as probe:
            for step in range(steps):
                probe.log(step)
        (run / "complete").touch()
    return run


def read_events(directory) -> dict:
    """Every tensor summary under `directory`, read back with TensorBoard's own event reader.

    Returns:
        `{tag: {"plugin": plugin_name, "steps": [int], "values": [np.ndarray]}}`.
    """
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    accumulator = event_accumulator.EventAccumulator(
        str(directory), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    events = {}
    for tag in accumulator.Tags()["tensors"]:
        records = accumulator.Tensors(tag)
        events[tag] = {
            "plugin": accumulator.SummaryMetadata(tag).plugin_data.plugin_name,
            "steps": [record.step for record in records],
            "values": [tensor_util.make_ndarray(record.tensor_proto) for record in records],
        }
    return events


def written_tags(directory: Path) -> dict[str, set[str]]:
    """Tags of the event files in `directory`, by TensorBoard plugin name."""
    tags: dict[str, set[str]] = {}
    for tag, event in read_events(directory).items():
        tags.setdefault(event["plugin"], set()).add(tag)
    return tags


def written_scalars(directory: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) pairs of scalar `tag` in the event files of `directory`."""
    event = read_events(directory)[tag]
    return [
        (step, float(value)) for step, value in zip(event["steps"], event["values"], strict=True)
    ]


def get_json(base_url: str, path: str, **query: str) -> Any:
    """GET `path` of TensorBoard at `base_url`, never through a proxy, and parse the JSON."""
    url = base_url.rstrip("/") + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as response:
        return json.loads(response.read())


def eventually(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 120.0) -> T:
    """Call `read` until `done(value)` or `timeout` seconds pass; return the last value.

    TensorBoard loads event files in the background, so served data appears over time.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.25)


def served_runs(base_url: str, expected: set[str], timeout: float = 120.0) -> set[str]:
    """The runs TensorBoard lists, once it lists at least `expected` (or after `timeout`)."""
    return eventually(
        lambda: set(get_json(base_url, "/data/runs")), lambda runs: runs >= expected, timeout
    )


def served_tags(base_url: str, plugin: str, expected: dict[str, set[str]]) -> dict[str, set[str]]:
    """Run -> tags that `plugin` serves, once they equal `expected` (or after a timeout)."""

    def read() -> dict[str, set[str]]:
        served = get_json(base_url, f"/data/plugin/{plugin}/tags")
        return {run: set(tags) for run, tags in served.items()}

    return eventually(read, lambda tags: tags == expected)


def process_state(pid: int) -> str | None:
    """State letter of process `pid` from /proc (R, S, Z, ...), or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def live_group_members(pgid: int) -> list[int]:
    """Processes of process group `pgid` that are alive (zombies excluded)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def group_gone(pgid: int, timeout: float = 30.0) -> bool:
    """Whether every process of group `pgid` is gone (dying processes get `timeout` s)."""
    return not eventually(lambda: live_group_members(pgid), lambda left: not left, timeout)
