"""Benchmark: tbprobe's log step side by side with a forward pass and with the alternatives.

Usage::

    .venv/bin/python scripts/bench.py                      # full run: several minutes
    .venv/bin/python scripts/bench.py --quick              # CI smoke run: about a minute
    .venv/bin/python scripts/bench.py --models resnet50 --repeats 5 --out bench.md

Models (`--models`): the demo CNN with a probe batch of 32; ResNet50, weights=None, 160x160, a
batch of 8 random images; and, for the speed at scale (issue 12), an MLP of 400 Dense(32) layers
(batch 16), DenseNet121 96x96 (batch 2), a 12-block transformer encoder with every sublayer
probed (`scripts/bench_models.py`), and MLPs of 25 and 100 layers (first log only, to show its
growth with the number of outputs). Every layer probed, medians over `--repeats` runs after
warm-up:

1. `forward`: one compiled forward pass of the probe batch, the floor.
2. `tbprobe log step`: `Probe(model, log_dir, sample=batch).log(step)`, defaults, one flush
   to disk per step; its `images=False` twin; on ResNet50 and the 400-layer MLP also the mean
   of 10 consecutive logs with `images_every=10` (what a long run pays per log at that setting).
3. `seed-article log` (demo, ResNet50): what tbprobe replaces, done as a user would: a
   `keras.Model(model.inputs, [l.output for l in layers])` rebuilt at each log, called eagerly,
   then stock `tf.summary.histogram`, `tf.summary.scalar` (sparsity, mean, std) and
   `tf.summary.image` (first sample, first channels, each normalized to [0, 1]) per layer.
4. `built-once tf.function + tf.summary.histogram` (demo, ResNet50): the same probe model built
   once, one `tf.function` with stock histogram and scalar summaries (no images).
5. `first log`: `Probe(...)` plus its first `log()` (tracing) against the first call of the
   plain forward `tf.function`, each in a fresh child process (`--first-log-child`); and the
   graph ops per probed output: ops of the probe function traced with images minus ops of the
   compiled forward, over the number of outputs.
6. `peak RSS` (demo, ResNet50): child processes (this script with `--memory-child`), each
   building the model and then running only N forward passes or only N tbprobe log steps; the
   peak RSS at the end (`VmHWM`: see `memory_child` for why not `ru_maxrss`).
7. `fit overhead`: the demo CNN trained with and without `tbprobe.ProbeCallback` (defaults, and
   `every_n_batches=100`; each also with the probe traced before `fit`, the one-time cost left
   out), a fresh seeded model per fit, configurations interleaved; overhead in wall time and in
   CPU time, with the spread of the per-round overheads.
8. `event bytes per log`: what the probe/ event files grow by per log, the run header left out,
   with images at every log and with `images_every=10`; and what 10,000 logs cost on disk.

Rates compared in measurements 1-4 are timed in the same rounds, interleaved, and their ratio
is the median of the per-round ratios, so that a change of load on a shared machine hits both
sides; the fit overhead (7) is the ratio of the medians, with the per-round spread beside it.
`--quick` measures the demo CNN only by default (ResNet50 at 64x64, batch 2, when asked with
`--models`), with fewer repetitions and a shorter fit. Targets are checked against the measured
numbers and printed as PASS or MISS; the table is printed on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
# First, even when PYTHONPATH names the root too: the `demo` package lives at the root, and
# scripts/demo.py, in this script's folder, would shadow it.
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from bench_models import BUILDERS  # noqa: E402  (scripts/, this script's folder)

import tbprobe  # noqa: E402

MODELS = ("demo", "resnet50", *BUILDERS)
# Compared with the stock tf.summary approaches and measured for peak RSS; the other models are
# the speed-at-scale rows (slower approaches would take minutes per step on them).
STOCK_COMPARED = ("demo", "resnet50")
FIRST_LOG_ONLY = ("mlp25", "mlp100")  # the growth of the first log with the number of outputs
IMAGES_EVERY_TIMED = ("resnet50", "mlp400")  # log step timed with images_every=10 too
IMAGE_CHANNELS = 32  # channels shown per feature-map image: tbprobe's default max_channels
IMAGES_EVERY = 10

# Targets from the issues.
TARGET_LOG_VS_FORWARD = {"resnet50": 2.0, "mlp400": 3.0, "densenet121": 3.0}  # log step, defaults
TARGET_NO_IMAGES_VS_FORWARD = {"resnet50": 1.5}  # log step with images=False
TARGET_FIRST_LOG = 5.0  # Probe() + first log <= 5x a compiled forward's first call
TARGET_OPS_PER_OUTPUT = 40.0  # graph ops of the probe function beyond the forward's, per output
TARGET_SPEEDUP_VS_SEED = 20.0  # tbprobe >= 20x faster than the seed article's approach
TARGET_PEAK_RSS = 1.5  # peak RSS of log steps <= 1.5x that of forward passes alone
TARGET_FIT_DEFAULT = 0.02  # fit overhead at ProbeCallback defaults
TARGET_GRADIENT_LOG = 3.5  # log step with gradients <= 3.5x forward pass, ResNet50
TARGET_GRADIENT_MEMORY = 1.2  # peak RSS of log steps with gradients <= one training step + 20%
TARGET_FIT_BATCHES = 0.05  # fit overhead with every_n_batches=100
FIT_EVERY_N_BATCHES = 100


@dataclass(frozen=True)
class Config:
    """Sizes of one benchmark run (full or quick)."""

    quick: bool
    repeats: int
    seed_repeats_resnet: int  # ResNet50: the seed article's approach is ~40 s per step
    compiled_repeats_resnet: int  # ResNet50: ~30 s per step, after a first call of ~2 min
    resnet_size: int
    resnet_batch: int
    memory_steps: int
    memory_runs: int  # child processes per mode: the peak varies with the executor's schedule
    fit_images: int
    fit_epochs: int
    fit_rounds: int
    event_logs: int  # logs whose event bytes are averaged, images on
    fit_batch: int = 64


def make_config(quick: bool, repeats: int | None) -> Config:
    if quick:
        return Config(
            quick=True,
            repeats=repeats or 5,
            seed_repeats_resnet=1,
            compiled_repeats_resnet=1,
            resnet_size=64,
            resnet_batch=2,
            memory_steps=5,
            memory_runs=1,
            fit_images=640,
            fit_epochs=1,
            fit_rounds=1,
            event_logs=2,
        )
    return Config(
        quick=False,
        repeats=repeats or 10,
        seed_repeats_resnet=3,
        compiled_repeats_resnet=2,
        resnet_size=160,
        resnet_batch=8,
        memory_steps=10,
        memory_runs=3,
        fit_images=3000,
        fit_epochs=3,
        fit_rounds=5,
        event_logs=5,
    )


# ----------------------------------------------------------------------------- models


def build_model(name: str, config: Config) -> tuple[keras.Model, np.ndarray, str]:
    """The model, its probe batch and a one-line description."""
    if name == "demo":
        from demo.data import make_shapes
        from demo.model import build_cnn

        model = build_cnn(seed=0)
        batch, _ = make_shapes(32, seed=1)
        return model, batch, "demo CNN (32x32x3), batch 32"
    if name == "resnet50":
        keras.utils.set_random_seed(0)
        size = config.resnet_size
        model = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3))
        rng = np.random.default_rng(0)
        batch = rng.uniform(0.0, 1.0, (config.resnet_batch, size, size, 3)).astype("float32")
        return model, batch, f"ResNet50 ({size}x{size}x3, weights=None), batch {len(batch)}"
    if name in BUILDERS:
        return BUILDERS[name]()
    raise ValueError(f"Unknown model {name!r}; expected one of {', '.join(MODELS)}.")


def probed_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Top-level layers, InputLayers excepted, as the seed article takes them: for these
    unnested models, the layers tbprobe probes by default."""
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


# ----------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Seconds of repeated runs of one measurement."""

    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def describe(self) -> str:
        low, high = fmt_seconds(min(self.seconds)), fmt_seconds(max(self.seconds))
        return f"{fmt_seconds(self.median)} [{low}-{high}], n={len(self.seconds)}"


def time_interleaved(
    calls: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int,
    settle: Sequence[str] = (),
) -> dict[str, Timing]:
    """Time each call once per round, `warmup` untimed rounds first.

    The order rotates from round to round, so that no call always follows the same one, and a
    change of machine load during the rounds hits every call alike (see `paired_ratio`). Calls
    named in `settle` run once untimed right before each timed run: after a step that churns
    gigabytes (the stock histogram's one-hot), a light step would otherwise be timed with cold
    caches and freshly unmapped memory, which no training loop inflicts on it. The garbage
    collector runs before each timed call (untimed), as the approaches that rebuild a Keras model
    per log leave garbage whose collection would otherwise land in whatever call comes next.
    """
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if name in settle:
                calls[name]()
            gc.collect()
            t0 = time.perf_counter()
            calls[name]()
            seconds[name].append(time.perf_counter() - t0)
    return {name: Timing(values) for name, values in seconds.items()}


def paired_ratio(a: Timing, b: Timing) -> float:
    """Median over rounds of `a / b`, both timed in the same rounds."""
    return statistics.median(x / y for x, y in zip(a.seconds, b.seconds, strict=True))


def fmt_seconds(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.1f} ms"


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- approaches


def forward_fn(model: keras.Model) -> Callable[[Any], Any]:
    return tf.function(lambda x: model(x, training=False))


def stock_summaries(name: str, out: Any) -> None:
    """Stock `tf.summary` calls for one layer output: a histogram and three scalars."""
    tf.summary.histogram(f"{name}/activations", out)
    tf.summary.scalar(f"{name}/sparsity", tf.reduce_mean(tf.cast(out == 0, tf.float32)))
    tf.summary.scalar(f"{name}/mean", tf.reduce_mean(out))
    tf.summary.scalar(f"{name}/std", tf.math.reduce_std(out))


def seed_article_log(
    model: keras.Model, layers: Sequence[keras.layers.Layer], batch: Any, writer: Any, step: int
) -> None:
    """Approach 3: a probe model rebuilt per log, eager call and eager stock summaries."""
    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    outputs = probe(batch, training=False)
    with writer.as_default(step=step):
        for layer, out in zip(layers, outputs, strict=True):
            name = layer.name
            stock_summaries(name, out)
            if out.shape.rank == 4:
                maps = out[0, :, :, :IMAGE_CHANNELS]  # [h, w, c] of the first sample
                low = tf.reduce_min(maps, axis=(0, 1), keepdims=True)
                high = tf.reduce_max(maps, axis=(0, 1), keepdims=True)
                maps = (maps - low) / tf.maximum(high - low, 1e-12)
                images = tf.transpose(maps, (2, 0, 1))[..., None]  # one image per channel
                tf.summary.image(
                    f"{name}/feature_maps", images, max_outputs=IMAGE_CHANNELS, step=step
                )
    writer.flush()


def compiled_histogram_log(
    model: keras.Model, layers: Sequence[keras.layers.Layer], writer: Any
) -> Callable[[Any, Any], Any]:
    """Approach 4: the probe model built once, stock summaries in one `tf.function`."""
    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    names = [layer.name for layer in layers]

    @tf.function
    def log(batch: Any, step: Any) -> None:
        outputs = probe(batch, training=False)
        with writer.as_default(step=step):
            for name, out in zip(names, outputs, strict=True):
                stock_summaries(name, out)

    return log


# ----------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the result table."""

    model: str
    measurement: str
    value: str
    compared_with: str
    ratio: str
    target: str = "-"
    result: str = "-"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *args: str, **kwargs: str) -> None:
        self.rows.append(Row(*args, **kwargs))

    def table(self) -> str:
        header = (
            "| Model | Measurement | Value: median [min-max] | Compared with | Ratio | Target "
            "| Result |"
        )
        lines = [header, "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(
                f"| {r.model} | {r.measurement} | {r.value} | {r.compared_with} | {r.ratio} "
                f"| {r.target} | {r.result} |"
            )
        return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# ----------------------------------------------------------------------------- per model


@dataclass
class Subject:
    """One model under measurement: its probe batch, compiled forward pass and `Probe`.

    Every measurement times `run_tbprobe` and `run_forward`; `steps` numbers the log steps of
    every probe of the subject across all of them.
    """

    name: str
    model: keras.Model
    layers: list[keras.layers.Layer]
    batch: Any
    forward: Callable[[Any], Any]
    probe: tbprobe.Probe
    steps: Iterator[int]
    tmp: str
    first_log_bytes: int  # the event folder after the first log: run header + one log
    _rare_images: tbprobe.Probe | None = None

    @property
    def is_resnet(self) -> bool:
        return self.name == "resnet50"

    @property
    def rare_images(self) -> tbprobe.Probe:
        """A second `Probe` with `images_every=IMAGES_EVERY`, its first log done."""
        if self._rare_images is None:
            log_dir = os.path.join(self.tmp, "images_every")
            self._rare_images = tbprobe.Probe(
                self.model, log_dir, sample=self.batch, images_every=IMAGES_EVERY
            )
            self._rare_images.log(next(self.steps))
        return self._rare_images

    def repeats(self, config: Config, resnet_repeats: int) -> int:
        """`config.repeats`, at most `resnet_repeats` on ResNet50 where a slow step takes 30 s."""
        return min(config.repeats, resnet_repeats) if self.is_resnet else config.repeats

    def run_forward(self) -> None:
        self.forward(self.batch).numpy()

    def run_tbprobe(self) -> None:
        self.probe.log(next(self.steps))

    def run_rare_images(self) -> None:
        """`IMAGES_EVERY` consecutive logs of `rare_images`: exactly one of them has images."""
        for _ in range(IMAGES_EVERY):
            self.rare_images.log(next(self.steps))

    def close(self) -> None:
        for probe in (self.probe, self._rare_images):
            if probe is not None:
                probe.close()


@dataclass
class Measured:
    """What one measurement adds to the report.

    Attributes:
        rows: Its table rows.
        note: Sentences for the model's note under the table.
        fewer: What ran fewer rounds than `--repeats`, for the note that says so.
    """

    rows: list[Row]
    note: str = ""
    fewer: str = ""


def bench_model(name: str, config: Config, report: Report) -> None:
    """Every measurement of one model, added to `report` in the table's order."""
    model, batch_np, description = build_model(name, config)
    layers = probed_layers(model)
    progress(f"{description}: {len(layers)} top-level layers")
    first_log, outputs = measure_first_log(name, config)
    in_process = []
    if name not in FIRST_LOG_ONLY:
        in_process = measure_in_process(name, model, layers, tf.constant(batch_np), config)
    memory = [measure_peak_rss(name, config)] if name in STOCK_COMPARED else []
    measured = [*in_process, first_log, *memory]  # the table's order
    report.rows.extend(row for m in measured for row in m.rows)
    notes = " ".join(m.note for m in measured if m.note)
    report.notes.append(f"{name}: {description}; {outputs} probed outputs. {notes}".rstrip())
    fewer = [m.fewer for m in measured if m.fewer]
    if fewer:
        report.notes.append(f"{name}: fewer repetitions, as these are slow: {'; '.join(fewer)}.")


def measure_in_process(
    name: str, model: keras.Model, layers: list[keras.layers.Layer], batch: Any, config: Config
) -> list[Measured]:
    """The measurements that time one model's log steps in this process."""
    with tempfile.TemporaryDirectory(prefix="tbprobe-bench-") as tmp:
        subject = make_subject(name, model, layers, batch, tmp)
        measured = [measure_log_step(subject, config, tmp)]
        if name in STOCK_COMPARED:
            compiled = measure_compiled_histogram(subject, config, tmp)
            seed = measure_seed_article(subject, config, tmp)  # the slowest: fewest rounds, last
            measured += [seed, compiled]
        measured.append(measure_event_bytes(subject, config))
        subject.close()
    return measured


def make_subject(
    name: str, model: keras.Model, layers: list[keras.layers.Layer], batch: Any, tmp: str
) -> Subject:
    """The subject with its forward pass traced and its Probe's first log done (untimed: the
    first log is measured in fresh processes, see `measure_first_log`)."""
    forward = forward_fn(model)
    forward(batch).numpy()
    probe = tbprobe.Probe(model, os.path.join(tmp, "tbprobe"), sample=batch)
    probe.log(0)
    first_log_bytes = directory_bytes(probe.probe_dir)
    steps = itertools.count(1)
    return Subject(name, model, layers, batch, forward, probe, steps, tmp, first_log_bytes)


def measure_first_log(name: str, config: Config) -> tuple[Measured, int]:
    """5. First calls, each in a fresh child process (nothing traced, cached or warm): the
    plain forward tf.function against Probe() + its first log; and the graph ops per output.

    Returns:
        The rows and the number of probed outputs.
    """
    forward = run_child(["--first-log-child", "forward", "--models", name], config)
    probe = run_child(["--first-log-child", "tbprobe", "--models", name], config)
    outputs, seconds = probe["outputs"], probe["seconds"]
    progress(f"{name}: first forward call {forward['seconds']:.2f} s, first log {seconds:.2f} s")
    ratio = seconds / forward["seconds"]
    ops_per_output = (probe["ops"] - forward["ops"]) / outputs
    rows = [
        Row(
            name,
            "first log (Probe() + first log(), fresh process)",
            f"{seconds:.2f} s = {seconds / outputs * 1e3:.0f} ms per output "
            f"(Probe() {probe['construct']:.2f} s)",
            f"first forward call {forward['seconds']:.2f} s (fresh process)",
            f"{ratio:.1f}x",
            f"<= {TARGET_FIRST_LOG:g}x",
            verdict(ratio <= TARGET_FIRST_LOG),
        ),
        Row(
            name,
            f"graph ops per probed output ({outputs} outputs, everything on)",
            f"{ops_per_output:.1f} = ({probe['ops']} - {forward['ops']}) / {outputs}",
            f"compiled forward {forward['ops']} ops",
            f"{probe['ops'] / forward['ops']:.1f}x",
            f"<= {TARGET_OPS_PER_OUTPUT:g}",
            verdict(ops_per_output <= TARGET_OPS_PER_OUTPUT),
        ),
    ]
    return Measured(rows), outputs


def first_log_child(name: str, mode: str, config: Config) -> None:
    """Build the model, then time the first call of its compiled forward ("forward") or
    Probe() + its first log ("tbprobe"); print seconds and graph ops as JSON."""
    model, batch_np, _ = build_model(name, config)
    batch = tf.constant(batch_np)
    with tempfile.TemporaryDirectory(prefix="tbprobe-bench-first-") as tmp:
        t0 = time.perf_counter()
        if mode == "forward":
            forward = forward_fn(model)
            forward(batch).numpy()
            seconds = time.perf_counter() - t0
            graph = forward.get_concrete_function(batch).graph
            result = {"seconds": seconds}
        else:
            probe = tbprobe.Probe(model, tmp, sample=batch)
            construct = time.perf_counter() - t0
            probe.log(0)
            seconds = time.perf_counter() - t0
            # Everything on: the probe function as traced for a log with images.
            graph = probe._compute.get_concrete_function(probe.sample, True).graph
            probe.close()
            outputs = len(probe.outputs)
            result = {"seconds": seconds, "construct": construct, "outputs": outputs}
    print(json.dumps({**result, "ops": len(graph.get_operations())}))


def measure_log_step(subject: Subject, config: Config, tmp: str) -> Measured:
    """1 and 2: the forward pass, the log step and its images=False twin (and, on some models,
    `IMAGES_EVERY` logs with images_every=IMAGES_EVERY), interleaved so that a change in machine
    load hits all alike; the probe model's compiled forward as a breakdown."""
    name, batch = subject.name, subject.batch
    # Breakdown from public attributes: the probe model's compiled forward alone, and a log step
    # without images (no feature-map grids, no PNG encoding).
    probe_forward = forward_fn(subject.probe.probe_model)
    probe_forward(batch)
    no_images = tbprobe.Probe(
        subject.model, os.path.join(tmp, "no_images"), sample=batch, images=False
    )
    no_images.log(0)
    calls = {
        "forward": subject.run_forward,
        "tbprobe": subject.run_tbprobe,
        "probe forward": lambda: probe_forward(batch),
        "no images": lambda: no_images.log(next(subject.steps)),
    }
    if name in IMAGES_EVERY_TIMED:
        calls["rare images"] = subject.run_rare_images
    timings = time_interleaved(calls, config.repeats, warmup=2)
    fwd, log, pfwd = timings["forward"], timings["tbprobe"], timings["probe forward"]
    no_images.close()
    progress(f"{name}: forward {fwd.describe()}; tbprobe log step {log.describe()}")
    rows = [
        Row(name, "forward pass", fwd.describe(), "-", "1.00x"),
        log_step_row(
            subject,
            f"tbprobe log step ({len(subject.probe.outputs)} outputs)",
            log,
            fwd,
            TARGET_LOG_VS_FORWARD.get(name),
        ),
        log_step_row(
            subject,
            "tbprobe log step, images=False",
            timings["no images"],
            fwd,
            TARGET_NO_IMAGES_VS_FORWARD.get(name),
        ),
    ]
    if "rare images" in timings:
        per_log = Timing([s / IMAGES_EVERY for s in timings["rare images"].seconds])
        label = f"log step, images_every={IMAGES_EVERY} (mean of {IMAGES_EVERY} logs)"
        rows.append(log_step_row(subject, label, per_log, fwd, None))
    note = (
        f"Breakdown of the tbprobe log step: the probe model's compiled forward alone (every "
        f"output returned) takes {fmt_seconds(pfwd.median)} ({paired_ratio(pfwd, fwd):.2f}x the "
        f"forward pass); the rest of the {fmt_seconds(log.median)} is reductions, images, PNG "
        "encoding and the event write."
    )
    return Measured(rows, note)


def log_step_row(
    subject: Subject, label: str, log: Timing, forward: Timing, target: float | None
) -> Row:
    """A log step's row: its ratio to the forward pass timed in the same rounds."""
    ratio = paired_ratio(log, forward)
    return Row(
        subject.name,
        label,
        log.describe(),
        f"forward pass {fmt_seconds(forward.median)}",
        f"{ratio:.2f}x",
        "-" if target is None else f"<= {target:g}x",
        "-" if target is None else verdict(ratio <= target),
    )


def measure_event_bytes(subject: Subject, config: Config) -> Measured:
    """8. Bytes a log step adds to the event files, the first log's run header left out: with
    images at every log (the defaults) and with images_every=IMAGES_EVERY."""
    every_log = event_bytes_per_log(subject.probe, subject.steps, config.event_logs)
    rare = event_bytes_per_log(subject.rare_images, subject.steps, IMAGES_EVERY)
    header = subject.first_log_bytes - every_log
    row = Row(
        subject.name,
        "event bytes per log",
        f"{fmt_bytes(every_log)}; images_every={IMAGES_EVERY}: {fmt_bytes(rare)}",
        f"10,000 logs: {fmt_bytes(every_log * 1e4)} ({fmt_bytes(rare * 1e4)} at "
        f"images_every={IMAGES_EVERY}); Probe(every=100), 10,000 steps: "
        f"{fmt_bytes(every_log * 100)}",
        f"{every_log / rare:.1f}x",
    )
    note = (
        f"Event bytes: growth of the probe/ event files over {config.event_logs} logs (images "
        f"at each) and over {IMAGES_EVERY} logs (images_every={IMAGES_EVERY}: one with "
        f"images), per log; the Ratio column is the first over the second. The first log "
        f"also writes the run header, about {fmt_bytes(header)} once."
    )
    return Measured([row], note)


def event_bytes_per_log(probe: tbprobe.Probe, steps: Iterator[int], logs: int) -> float:
    """Mean bytes `logs` consecutive logs of `probe` (its first log done) add to its folder."""
    before = directory_bytes(probe.probe_dir)
    for _ in range(logs):
        probe.log(next(steps))
    return (directory_bytes(probe.probe_dir) - before) / logs


def directory_bytes(folder: str) -> int:
    return sum(path.stat().st_size for path in Path(folder).iterdir() if path.is_file())


def fmt_bytes(count: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count:.0f} B"


def measure_compiled_histogram(subject: Subject, config: Config, tmp: str) -> Measured:
    """4. The probe model built once + stock summaries in one tf.function."""
    name = subject.name
    repeats = subject.repeats(config, config.compiled_repeats_resnet)
    writer = tf.summary.create_file_writer(os.path.join(tmp, "compiled"))
    log = compiled_histogram_log(subject.model, subject.layers, writer)
    steps = itertools.count(0)

    def run_compiled() -> None:
        log(subject.batch, tf.constant(next(steps), tf.int64))
        writer.flush()

    t0 = time.perf_counter()
    run_compiled()
    first_call = time.perf_counter() - t0
    progress(f"{name}: built-once tf.function, first call {first_call:.2f} s")
    timings = time_interleaved(
        {
            "compiled": run_compiled,
            "tbprobe": subject.run_tbprobe,
            "forward": subject.run_forward,
        },
        repeats,
        warmup=0,  # its first call above ran it once already
        settle=("tbprobe", "forward"),
    )
    writer.close()
    compiled = timings["compiled"]
    progress(f"{name}: built-once tf.function {compiled.describe()}")
    row = Row(
        name,
        "built-once tf.function + tf.summary.histogram",
        compiled.describe(),
        f"tbprobe log step {fmt_seconds(timings['tbprobe'].median)} (same rounds); "
        f"{paired_ratio(compiled, timings['forward']):.1f}x the forward pass",
        f"{paired_ratio(compiled, timings['tbprobe']):.2f}x",
    )
    note = f"First call of the built-once tf.function (tracing + one run): {first_call:.2f} s."
    fewer = ""
    if repeats < config.repeats:
        fewer = (
            f"the built-once tf.function {repeats} round(s) after its first call "
            f"({fmt_seconds(compiled.median)} per step)"
        )
    return Measured([row], note, fewer)


def measure_seed_article(subject: Subject, config: Config, tmp: str) -> Measured:
    """3. The seed article's approach, eager; slowest, so last and fewest repetitions."""
    name = subject.name
    repeats = subject.repeats(config, config.seed_repeats_resnet)
    writer = tf.summary.create_file_writer(os.path.join(tmp, "seed"))
    steps = itertools.count(0)
    progress(f"{name}: seed-article approach, 1 warm-up + {repeats} timed rounds")
    timings = time_interleaved(
        {
            "seed": lambda: seed_article_log(
                subject.model, subject.layers, subject.batch, writer, next(steps)
            ),
            "tbprobe": subject.run_tbprobe,
        },
        repeats,
        warmup=1,
        settle=("tbprobe",),
    )
    writer.close()
    seed, seed_log = timings["seed"], timings["tbprobe"]
    progress(f"{name}: seed-article approach {seed.describe()}")
    speedup = paired_ratio(seed, seed_log)
    row = Row(
        name,
        "seed-article log (rebuilt model, eager tf.summary)",
        seed.describe(),
        f"tbprobe log step {fmt_seconds(seed_log.median)} (same rounds)",
        f"{speedup:.1f}x",
        f"tbprobe >= {TARGET_SPEEDUP_VS_SEED:g}x faster",
        verdict(speedup >= TARGET_SPEEDUP_VS_SEED),
    )
    fewer = ""
    if repeats < config.repeats:
        fewer = (
            f"the seed-article approach {repeats} round(s) after 1 warm-up round "
            f"({fmt_seconds(seed.median)} per step)"
        )
    return Measured([row], fewer=fewer)


def measure_peak_rss(name: str, config: Config) -> Measured:
    """6. Peak memory, in child processes, one after the other."""
    memory: dict[str, list[dict[str, float]]] = {"forward": [], "tbprobe": []}
    for _ in range(config.memory_runs):
        for mode, runs in memory.items():
            runs.append(run_child(["--memory-child", mode, "--models", name], config))
    fwd_mem, log_mem = (memory_summary(memory[mode]) for mode in ("forward", "tbprobe"))
    mem_ratio = log_mem["peak"] / fwd_mem["peak"]
    mem_steps = config.memory_steps
    rows = [
        Row(
            name,
            f"peak RSS, {mem_steps} log steps",
            f"{log_mem['describe']} MiB (+{log_mem['increment']:.0f})",
            f"{mem_steps} forward passes {fwd_mem['describe']} MiB (+{fwd_mem['increment']:.0f})",
            f"{mem_ratio:.2f}x",
            f"<= {TARGET_PEAK_RSS:g}x",
            verdict(mem_ratio <= TARGET_PEAK_RSS),
        ),
        Row(
            name,
            "RSS after import + model build (context)",
            f"{fwd_mem['build']:.0f} MiB",
            "(+N) above: peak over it",
            "-",
        ),
    ]
    note = (
        f"Peak RSS: whole child process, median [min-max] of {config.memory_runs} process(es) "
        f"per side; (+N) is the median peak during the {mem_steps} steps over the RSS after "
        "import + build."
    )
    return Measured(rows, note)


# ----------------------------------------------------------------------------- memory child


def run_child(arguments: list[str], config: Config) -> dict[str, Any]:
    """Run this script as a child process with `arguments`; returns the JSON of its last line."""
    command = [sys.executable, str(Path(__file__).resolve()), *arguments]
    command += ["--quick"] if config.quick else []
    progress(f"child: {' '.join(arguments)}")
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    """Median peak, its range as text, median increment over the build, median build RSS."""
    peaks = [run["peak_mib"] for run in runs]
    text = f"{statistics.median(peaks):.0f}"
    if len(peaks) > 1:
        text += f" [{min(peaks):.0f}-{max(peaks):.0f}]"
    return {
        "peak": statistics.median(peaks),
        "describe": text,
        "increment": statistics.median(run["phase_peak_mib"] - run["build_mib"] for run in runs),
        "build": statistics.median(run["build_mib"] for run in runs),
    }


def proc_status_mib(field_name: str) -> float:
    """A `/proc/self/status` memory field (`VmRSS`, `VmHWM`) in MiB; NaN where there is none."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(f"{field_name}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def memory_child(name: str, mode: str, config: Config) -> None:
    """Build the model, run N forward passes or N log steps, print RSS figures as JSON.

    Peaks are read from `VmHWM`, not `ru_maxrss`: after fork and exec, Linux carries the
    parent's peak RSS into the child's `ru_maxrss`, so a child started by a big benchmark
    process would report the parent's peak. The peak is reset after the build, so that the
    phase's own peak is known too.
    """
    model, batch_np, _ = build_model(name, config)
    batch = tf.constant(batch_np)
    build_mib = proc_status_mib("VmRSS")
    build_peak_mib = proc_status_mib("VmHWM")
    if not reset_peak_rss():
        build_peak_mib = float("nan")
    with tempfile.TemporaryDirectory(prefix="tbprobe-bench-mem-") as tmp:
        if mode == "forward":
            forward = forward_fn(model)
            for _ in range(config.memory_steps):
                forward(batch).numpy()
        else:
            probe = tbprobe.Probe(model, tmp, sample=batch)
            for step in range(config.memory_steps):
                probe.log(step)
            probe.close()
    phase_peak_mib = proc_status_mib("VmHWM")
    if np.isnan(phase_peak_mib):  # no /proc: ru_maxrss, in KiB on Linux, bytes on macOS
        scale = 1024 * 1024 if sys.platform == "darwin" else 1024
        phase_peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
    result = {
        "build_mib": build_mib,
        "phase_peak_mib": phase_peak_mib,
        "peak_mib": float(np.nanmax([build_peak_mib, phase_peak_mib])),
    }
    print(json.dumps(result))


# ----------------------------------------------------------------------------- fit overhead


@dataclass(frozen=True)
class FitVariant:
    """One configuration of the fit benchmark."""

    label: str
    callback: bool
    every_n_batches: int | None = None
    pretraced: bool = False  # Probe built and traced before fit: the one-time cost excluded

    @property
    def target(self) -> float:
        """The overhead target this variant is checked against (context only when pretraced)."""
        return TARGET_FIT_BATCHES if self.every_n_batches else TARGET_FIT_DEFAULT


FIT_VARIANTS = (
    FitVariant("without callback", callback=False),
    FitVariant("ProbeCallback defaults", True),
    FitVariant(f"ProbeCallback every_n_batches={FIT_EVERY_N_BATCHES}", True, FIT_EVERY_N_BATCHES),
    FitVariant("ProbeCallback defaults, traced before fit", True, pretraced=True),
    FitVariant(
        f"ProbeCallback every_n_batches={FIT_EVERY_N_BATCHES}, traced before fit",
        True,
        FIT_EVERY_N_BATCHES,
        pretraced=True,
    ),
)


def fit_once(
    variant: FitVariant, data: tuple[Any, ...], config: Config, run_dir: str
) -> tuple[float, float]:
    """Wall and CPU seconds of one `model.fit` of a fresh demo CNN (seed 0).

    CPU time (all threads of this process) is far steadier than wall time on a shared machine:
    on the 2-core machine this was written on, identical fits varied by +-30% in wall time and
    +-5% in CPU time.
    """
    from demo.model import build_cnn, compile_cnn

    x, y, x_val = data
    model = compile_cnn(build_cnn(seed=0), learning_rate=1e-3)
    callbacks = []
    if variant.callback:
        callback = tbprobe.ProbeCallback(
            run_dir, sample=x_val[:16], every_n_batches=variant.every_n_batches
        )
        if variant.pretraced:
            # Public API only: set_model builds the Probe (the model is built); stats() runs
            # its compiled step once, tracing it, without writing anything. fit reuses both.
            callback.set_model(model)
            callback.probe.stats()
        callbacks.append(callback)
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(
        x,
        y,
        batch_size=config.fit_batch,
        epochs=config.fit_epochs,
        verbose=0,
        callbacks=callbacks,
        shuffle=False,
    )
    return time.perf_counter() - t0, time.process_time() - c0


def logged_steps(run_dir: str) -> int:
    """How many log steps a run holds, read back from its event files."""
    from tbprobe.events import read_run

    run = read_run(run_dir)
    first = next(iter(run.scalars.values()))
    return len(first["mean"][0])


def bench_fit(config: Config, report: Report) -> None:
    """Measurement 7: demo CNN fits with and without ProbeCallback, interleaved."""
    from demo.data import make_shapes

    x, y = make_shapes(config.fit_images, seed=0)
    x_val, _ = make_shapes(64, seed=1)
    data = (x, y, x_val)
    wall: dict[FitVariant, list[float]] = {v: [] for v in FIT_VARIANTS}
    cpu: dict[FitVariant, list[float]] = {v: [] for v in FIT_VARIANTS}
    logs: dict[FitVariant, int] = {}
    with tempfile.TemporaryDirectory(prefix="tbprobe-bench-fit-") as tmp:
        progress("fit: warm-up (one fit without and one with the callback, discarded)")
        for variant in FIT_VARIANTS[:2]:
            fit_once(variant, data, config, os.path.join(tmp, "warmup"))
        count = len(FIT_VARIANTS)
        for r in range(config.fit_rounds):
            order = FIT_VARIANTS[r % count :] + FIT_VARIANTS[: r % count]  # rotate per round
            for variant in order:
                run_dir = os.path.join(tmp, f"round{r}-{FIT_VARIANTS.index(variant)}")
                seconds, cpu_seconds = fit_once(variant, data, config, run_dir)
                wall[variant].append(seconds)
                cpu[variant].append(cpu_seconds)
                if variant.callback and variant not in logs:  # the same every round
                    logs[variant] = logged_steps(run_dir)
            progress(
                f"fit round {r + 1}/{config.fit_rounds} (wall/CPU s): "
                + ", ".join(f"{v.label} {wall[v][-1]:.2f}/{cpu[v][-1]:.2f}" for v in FIT_VARIANTS)
            )

    base = FIT_VARIANTS[0]
    batches = -(-config.fit_images // config.fit_batch)
    cpu_base = Timing(cpu[base])
    report.add(
        "demo (fit)",
        "fit without callback",
        f"{Timing(wall[base]).describe()}; CPU {cpu_base.describe()}",
        f"{config.fit_images} images, batch {config.fit_batch}, {config.fit_epochs} epoch(s), "
        f"{batches} batches/epoch",
        "1.00x",
    )
    for variant in FIT_VARIANTS[1:]:
        target = variant.target
        texts, verdicts, overheads = [], [], {}
        for kind, times in (("wall", wall), ("CPU", cpu)):
            overhead = statistics.median(times[variant]) / statistics.median(times[base]) - 1
            overheads[kind] = overhead
            paired = [t / b - 1.0 for t, b in zip(times[variant], times[base], strict=True)]
            low, high = min(paired), max(paired)
            texts.append(f"{kind} {overhead * 100:+.1f}% [{low * 100:+.1f}% to {high * 100:+.1f}%]")
            spans = " (spread spans 0)" if low <= 0.0 <= high else ""
            verdicts.append(f"{kind} {verdict(overhead <= target)}{spans}")
        report.add(
            "demo (fit)",
            f"fit overhead, {variant.label}",
            f"{'; '.join(texts)}; {logs[variant]} logs/fit",
            f"fit without callback {statistics.median(wall[base]):.2f} s",
            f"{1 + overheads['wall']:.3f}x",
            f"<= {target * 100:g}%" + (" (context)" if variant.pretraced else ""),
            "; ".join(verdicts),
        )
    report.notes.append(
        f"fit: {config.fit_rounds} rounds of {len(FIT_VARIANTS)} fits, the order rotated each "
        "round, after a discarded warm-up. Overhead = median fit time with the callback / "
        "median without - 1 (for wall time, the Ratio column), in wall time and in CPU time "
        "(all threads of the process, steadier on a shared machine); [min to max] of the "
        "per-round overheads (fit with / fit without in the same round - 1): when that range "
        "spans 0, the overhead is within the noise. Fit time includes the probe's "
        "construction and its tracing at the first log, except in the 'traced before fit' "
        "rows, where `callback.set_model(model)` and `callback.probe.stats()` ran before the "
        "timer (public API; nothing written)."
    )


# ----------------------------------------------------------------------------- gradients


def gradient_setup(config: Config) -> tuple[keras.Model, Any, Any]:
    """ResNet50 compiled for training (SGD, sparse cross-entropy, no XLA: like the probe's own
    tf.function), its probe batch and random class labels as targets."""
    model, batch_np, _ = build_model("resnet50", config)
    model.compile(keras.optimizers.SGD(1e-3), "sparse_categorical_crossentropy", jit_compile=False)
    labels = np.random.default_rng(1).integers(0, 1000, len(batch_np))
    return model, tf.constant(batch_np), tf.constant(labels)


def bench_gradients(config: Config, report: Report) -> None:
    """ResNet50: a log step with gradients (targets given, defaults: update ratios on, so each
    step also snapshots the weights and measures the previous snapshot) against a compiled
    forward pass and a log step without targets; peak RSS against one training step."""
    model, batch, labels = gradient_setup(config)
    forward = forward_fn(model)
    forward(batch)
    with tempfile.TemporaryDirectory(prefix="tbprobe-bench-grad-") as tmp:
        t0 = time.perf_counter()
        probe = tbprobe.Probe(model, os.path.join(tmp, "grad"), sample=batch, targets=labels)
        probe.log(0)
        first_log = time.perf_counter() - t0
        plain = tbprobe.Probe(model, os.path.join(tmp, "plain"), sample=batch)
        plain.log(0)
        steps, plain_steps = itertools.count(1), itertools.count(1)
        timing = time_interleaved(
            {
                "forward": lambda: forward(batch).numpy(),
                "gradients": lambda: probe.log(next(steps)),
                "plain": lambda: plain.log(next(plain_steps)),
                "train": lambda: model.train_on_batch(batch, labels),
            },
            min(config.repeats, 5),
            warmup=1,
        )
        probe.close()
        plain.close()
    fwd, grad = timing["forward"], timing["gradients"]
    ratio = paired_ratio(grad, fwd)
    report.add(
        "resnet50",
        f"gradients: log step with targets ({len(probe.outputs)} outputs)",
        grad.describe(),
        f"forward pass {fmt_seconds(fwd.median)}; log step without targets "
        f"{fmt_seconds(timing['plain'].median)}; train_on_batch "
        f"{fmt_seconds(timing['train'].median)}",
        f"{ratio:.2f}x",
        f"<= {TARGET_GRADIENT_LOG:g}x",
        verdict(ratio <= TARGET_GRADIENT_LOG),
    )
    runs = {mode: [] for mode in ("train", "gradients")}
    for _ in range(config.memory_runs):
        for mode, results in runs.items():
            results.append(run_child(["--gradient-memory-child", mode], config))
    train, logged = (memory_summary(runs[mode]) for mode in ("train", "gradients"))
    mem_ratio = logged["peak"] / train["peak"]
    report.add(
        "resnet50",
        f"gradients: peak RSS, {config.memory_steps} log steps with targets",
        f"{logged['describe']} MiB (+{logged['increment']:.0f})",
        f"{config.memory_steps} train_on_batch {train['describe']} MiB (+{train['increment']:.0f})",
        f"{mem_ratio:.2f}x",
        f"<= {TARGET_GRADIENT_MEMORY:g}x",
        verdict(mem_ratio <= TARGET_GRADIENT_MEMORY),
    )
    report.notes.append(
        f"gradients: ResNet50 compiled with SGD and sparse cross-entropy, jit_compile=False; "
        f"first log with targets (tracing) {first_log:.1f} s; timed over "
        f"{len(fwd.seconds)} rounds after 1 warm-up round."
    )


def gradient_memory_child(mode: str, config: Config) -> None:
    """N training steps or N log steps with targets; RSS figures as JSON (see memory_child)."""
    model, batch, labels = gradient_setup(config)
    build_mib = proc_status_mib("VmRSS")
    build_peak_mib = proc_status_mib("VmHWM") if reset_peak_rss() else float("nan")
    with tempfile.TemporaryDirectory(prefix="tbprobe-bench-mem-") as tmp:
        if mode == "train":
            for _ in range(config.memory_steps):
                model.train_on_batch(batch, labels)
        else:
            probe = tbprobe.Probe(model, tmp, sample=batch, targets=labels)
            for step in range(config.memory_steps):
                probe.log(step)
            probe.close()
    phase_peak_mib = proc_status_mib("VmHWM")
    peak = float(np.nanmax([build_peak_mib, phase_peak_mib]))
    print(json.dumps({"build_mib": build_mib, "phase_peak_mib": phase_peak_mib, "peak_mib": peak}))


# ----------------------------------------------------------------------------- main


def machine_description() -> list[str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import tensorboard

    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return [
        f"- CPU: {cpu}; {cores} cores ({usable} usable by this process)",
        f"- Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras "
        f"{keras.__version__}, TensorBoard {tensorboard.__version__}, NumPy {np.__version__}, "
        f"tbprobe {tbprobe.__version__}",
        f"- Load average at start: {', '.join(f'{v:.2f}' for v in os.getloadavg())}",
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke run, about a minute")
    parser.add_argument(
        "--models",
        default=None,
        help=f"comma-separated, from {','.join(MODELS)} (default: all; --quick: demo)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    parser.add_argument("--no-fit", action="store_true", help="skip the fit overhead runs")
    parser.add_argument("--memory-child", choices=("forward", "tbprobe"), help=argparse.SUPPRESS)
    parser.add_argument("--first-log-child", choices=("forward", "tbprobe"), help=argparse.SUPPRESS)
    parser.add_argument("--gradients-only", action="store_true", help="only the gradient rows")
    parser.add_argument(
        "--gradient-memory-child", choices=("train", "gradients"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    default = "demo" if args.quick else ",".join(MODELS)
    args.models = [m.strip() for m in (args.models or default).split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or not args.models:
        parser.error(f"--models: unknown {unknown}; expected names from {','.join(MODELS)}")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats: expected a positive integer, received {args.repeats}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = make_config(args.quick, args.repeats)
    if args.memory_child:
        memory_child(args.models[0], args.memory_child, config)
        return 0
    if args.gradient_memory_child:
        gradient_memory_child(args.gradient_memory_child, config)
        return 0
    if args.first_log_child:
        first_log_child(args.models[0], args.first_log_child, config)
        return 0

    command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    started = time.perf_counter()
    header = [
        f"# tbprobe benchmark ({'quick' if config.quick else 'full'})",
        "",
        f"Command: `{command}` (cwd {os.getcwd()})",
        "",
        *machine_description(),
        "",
    ]
    print("\n".join(header), flush=True)

    report = Report()
    for name in [] if args.gradients_only else args.models:
        bench_model(name, config, report)
    if "resnet50" in args.models:
        bench_gradients(config, report)
    if not args.no_fit and not args.gradients_only:
        bench_fit(config, report)

    report.notes.append(
        f"Timings: median [min-max] of {config.repeats} timed runs after warm-up unless noted; "
        "each tbprobe log step and each summary approach flushes its event file to disk."
    )
    body = [
        report.table(),
        "",
        *(f"- {note}" for note in report.notes),
        "",
        f"Wall time of this benchmark: {time.perf_counter() - started:.0f} s; load average at "
        f"the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}",
    ]
    text = "\n".join(body)
    print(text, flush=True)
    if args.out is not None:
        args.out.write_text("\n".join(header) + "\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
