"""`Probe`: logs the probed activations of a model to TensorBoard, one compiled call per log step.

A log step runs one `tf.function`, traced once per `Probe`: the probe model's forward pass on
the fixed sample, then, per probed output, the reductions of `tbprobe.stats` (histogram counts
and health scalars) and the PNG-encoded image of `tbprobe.images`. Only these small results
leave the graph: one `[outputs, fields]` matrix and the PNG strings. On the host they become
one `Summary` protobuf written as one event (`tbprobe.summaries`), inside
`tf.summary.record_if(True)` so that another callback's gating (Keras's TensorBoard
`update_freq`) cannot drop it. When some output holds NaN, Inf or huge values, a second
compiled function (traced on first need) recomputes the reductions exactly.

Events go to `<log_dir>/probe`, flushed after every log step. Tags, per probed output `<tag>`:
`<tag>/activations` (histogram), `<tag>/sparsity`, `<tag>/dead_units`, `<tag>/mean`, `<tag>/std`,
`<tag>/nonfinite`, `<tag>/mean_minus_std`, `<tag>/mean_plus_std` (scalars), `<tag>/feature_maps`
(rank-4 outputs) or `<tag>/heatmap` (rank-2 to rank-4 outputs, see `tbprobe.images`) images; per
attention layer `<tag>`, the image `<tag>/attention` and the scalars `<tag>/attention_entropy`,
`<tag>/attention_entropy_min` (`tbprobe.attention`); once per `Probe`, the text
`tbprobe/manifest` and a custom-scalars layout.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tbprobe import summaries
from tbprobe.attention import attention_entropy, attention_image
from tbprobe.images import describe_image, encode_png_images, feature_map_grid, heatmap
from tbprobe.options import (
    DEFAULT_BUCKETS,
    DEFAULT_HISTOGRAM_SAMPLE,
    DEFAULT_MAX_IMAGE_SIDE,
    LogOptions,
    positive_int,
)
from tbprobe.probing import ProbedOutput, probe_model
from tbprobe.selection import LayerSpec
from tbprobe.stats import (
    FIELDS,
    SCALAR_NAMES,
    histogram_rows,
    layer_reductions,
    layer_reductions_exact,
)
from tbprobe.tags import ATTENTION, FEATURE_MAPS, PROBE_DIR


@dataclass(frozen=True)
class _Plan:
    """What is computed for one probed output."""

    output: ProbedOutput
    unit_axis: int | None
    image: str | None
    channels_first: bool


class Probe:
    """Logs per-layer activation histograms, images and health scalars of `model`.

    Args:
        model: a built `keras.Model` (Sequential, Functional, nested or subclassed).
        log_dir: run directory (any path `tf.io.gfile` accepts); events go to `<log_dir>/probe`.
        sample: the fixed probe batch, shown at every step: numpy array, tensor, dict or tuple
            for multi-input models, or a `tf.data.Dataset` (its first batch, labels dropped).
        layers: `None` for every layer, or names, paths, glob patterns and layer classes.
        depth: deepest layer-path depth probed (1 = the model's own layers, 2 = one level
            inside blocks and nested models, ...), or None for every level.
        every: `log(step)` logs when `step % every == 0`.
        buckets: histogram buckets per layer.
        max_channels: feature-map channels shown per sample.
        max_samples: samples shown in feature-map grids and rank-3 heatmaps.
        cmap: matplotlib colormap name for images, or None for grayscale.
        zero_tol: `abs(x) <= zero_tol` counts as zero for sparsity and dead units.
        images: whether to log feature-map grids and heatmaps.
        max_image_side: cap on an image's longer side, in pixels.
        histogram_sample: most elements of one output bucketed for its histogram (a strided
            sample, counts scaled to the total; see `tbprobe.stats`); None buckets every one.

    Raises:
        ValueError: a bad argument, an unbuilt model, a sample the model cannot take, or a
            `log_dir` that cannot be written; all at construction.

    Example:
        >>> with tbprobe.Probe(model, "runs/a", sample=x_val[:16], every=100) as probe:
        ...     for step, (xb, yb) in enumerate(dataset):
        ...         train_step(xb, yb)
        ...         probe.log(step)
    """

    def __init__(
        self,
        model: Any,
        log_dir: str | os.PathLike[str],
        sample: Any,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        every: int = 1,
        buckets: int = DEFAULT_BUCKETS,
        max_channels: int = 32,
        max_samples: int = 1,
        cmap: str | None = "viridis",
        zero_tol: float = 0.0,
        images: bool = True,
        max_image_side: int = DEFAULT_MAX_IMAGE_SIDE,
        histogram_sample: int | None = DEFAULT_HISTOGRAM_SAMPLE,
        depth: int | None = None,
    ):
        self.every = positive_int("every", every)
        self.options = LogOptions(
            buckets=buckets,
            max_channels=max_channels,
            max_samples=max_samples,
            cmap=cmap,
            zero_tol=zero_tol,
            images=images,
            max_image_side=max_image_side,
            histogram_sample=histogram_sample,
        )
        self.log_dir = os.fspath(log_dir)
        self.probe_dir = tf.io.gfile.join(self.log_dir, PROBE_DIR)
        check_writable(self.log_dir)

        self.sample = _as_tensors(first_batch(sample))
        self.probe_model = probe_model(model, layers, sample=self.sample, depth=depth)
        self.outputs: list[ProbedOutput] = self.probe_model.probed_outputs
        plans = [self._plan(output) for output in self.outputs]
        self._plans = [plan for plan in plans if plan.output.kind != ATTENTION]
        self._attention_plans = [plan for plan in plans if plan.output.kind == ATTENTION]
        self._writes = _writes_summaries(model)
        self._compute = tf.function(self._reduce_fast, autograph=False)
        self._compute_exact = tf.function(self._reduce_exact, autograph=False)
        self._writer: Any = None
        self._header_written = False
        self._summary = summaries.SummaryBuilder()
        self._last: np.ndarray | None = None

    def log(self, step: int | Any) -> bool:
        """Log the probe batch's activations at `step` if `step % every == 0`.

        Args:
            step: the global step, a Python int or an integer `tf.Variable`/tensor such as
                `optimizer.iterations`.

        Returns:
            Whether anything was logged (False off-schedule, and on non-chief workers of a
            multi-worker strategy, which never write).
        """
        step = _as_step(step)
        if step % self.every or not self._writes:
            return False
        reductions, entropies, images = self._run()
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.probe_dir)
        if not self._header_written:
            header = summaries.SummaryBuilder()
            plans = self._plans + self._attention_plans
            summaries.add_run_header(header, [self._manifest_row(plan) for plan in plans])
            header.write(self._writer, step)
            self._header_written = True
        builder = self._summary
        for plan, row in zip(self._plans, reductions, strict=True):
            values = dict(zip(FIELDS, row[: len(FIELDS)], strict=True))
            rows = histogram_rows(row[len(FIELDS) :], values["low"], values["high"])
            summaries.add_layer_values(builder, plan.output.tag, values, rows)
            if plan.image is not None:
                builder.images(f"{plan.output.tag}/{plan.image}", images[plan.output.tag])
        for plan, row in zip(self._attention_plans, entropies, strict=True):
            image = images[plan.output.tag] if plan.image is not None else None
            summaries.add_attention_values(builder, plan.output.tag, row, image)
        builder.write(self._writer, step)
        self._writer.flush()
        return True

    def stats(self) -> dict[str, dict[str, float]]:
        """Health scalars of the last log step (computed now if nothing was logged yet).

        Returns:
            `{tag: {"sparsity", "dead_units", "mean", "std", "nonfinite": float}}`.
        """
        if self._last is None:
            self._run()
        return {
            plan.output.tag: {name: float(row[FIELDS.index(name)]) for name in SCALAR_NAMES}
            for plan, row in zip(self._plans, self._last, strict=True)
        }

    def close(self) -> None:
        """Flush and close the event file; a later `log` appends to the run in a new file."""
        if self._writer is not None:
            self._writer.close()
        self._writer = None

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Probe({len(self.outputs)} outputs -> {self.probe_dir!r}, every={self.every})"

    def _plan(self, output: ProbedOutput) -> _Plan:
        if output.kind == ATTENTION:
            drawable = self.options.images and None not in output.shape[1:]
            return _Plan(output, None, ATTENTION if drawable else None, False)
        rank = len(output.shape)
        channels_first = getattr(output.layer, "data_format", None) == "channels_first"
        if rank < 2:
            unit_axis = None
        else:
            unit_axis = 1 if channels_first and rank >= 3 else -1
        image = describe_image(output.shape, output.layer) if self.options.images else None
        return _Plan(output, unit_axis, image, channels_first and rank == 4)

    def _manifest_row(self, plan: _Plan) -> summaries.ManifestRow:
        output = plan.output
        layer_class = type(output.layer).__name__
        return summaries.ManifestRow(
            output.tag, layer_class, output.shape, output.dtype, plan.image, output.kind
        )

    def _run(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Reductions `[outputs, FIELDS + buckets]`, attention entropies `[attention outputs,
        2]` and encoded images, on the host."""
        reductions, entropies, images = self._compute(self.sample)
        reductions = reductions.numpy()
        inexact = reductions[:, FIELDS.index("exact")] == 0
        if inexact.any():  # NaN, Inf or huge values: the exact branch, traced on first need
            reductions[inexact] = self._compute_exact(self.sample).numpy()[inexact]
        self._last = reductions
        images = {tag: value.numpy() for tag, value in images.items()}
        return reductions, entropies.numpy(), images

    def _reduce_fast(self, sample: Any) -> tuple[tf.Tensor, tf.Tensor, dict[str, tf.Tensor]]:
        o = self.options
        plans = {plan.output.tag: plan for plan in self._plans + self._attention_plans}
        rows, entropies, images = {}, {}, {}

        def consume(output: ProbedOutput, x: tf.Tensor, mask: Any) -> list[tf.Tensor]:
            tag = output.tag
            plan = plans[tag]
            if output.kind == ATTENTION:
                entropies[tag] = tf.stack(attention_entropy(x, mask))
                if plan.image is None:
                    return [entropies[tag]]
                image = attention_image(x, o.max_samples, o.max_image_side)
                images[tag] = encode_png_images(image, o.palette)
                return [entropies[tag], images[tag]]
            rows[tag] = layer_reductions(
                x, o.buckets, o.zero_tol, plan.unit_axis, o.histogram_sample
            )
            if plan.image is None:
                return [rows[tag]]
            images[tag] = encode_png_images(self._image(plan, x), o.palette)
            return [rows[tag], images[tag]]

        # Each output is reduced as soon as its layer returns, and the forward pass waits for
        # it: a log step's peak memory stays near the forward pass's (see run_consuming).
        self.probe_model.run_consuming(sample, consume)
        activations = tf.stack([rows[plan.output.tag] for plan in self._plans])
        attention = [entropies[plan.output.tag] for plan in self._attention_plans]
        attention = tf.stack(attention) if attention else tf.zeros([0, 2])
        return activations, attention, images

    def _reduce_exact(self, sample: Any) -> tf.Tensor:
        o = self.options
        activations = self.probe_model(sample, training=False)
        return tf.stack(
            [
                layer_reductions_exact(
                    activations[plan.output.tag], o.buckets, o.zero_tol, plan.unit_axis
                )
                for plan in self._plans
            ]
        )

    def _image(self, plan: _Plan, x: tf.Tensor) -> tf.Tensor:
        o = self.options
        if plan.image == FEATURE_MAPS:
            return feature_map_grid(
                x, o.max_channels, o.max_samples, plan.channels_first, o.max_image_side
            )
        return heatmap(x, o.max_samples, o.max_image_side)


def first_batch(sample: Any) -> Any:
    """The probe batch: `sample` itself, or the inputs of a dataset's first batch."""
    if sample is None:
        raise ValueError(
            "Missing argument `sample`: tbprobe needs a fixed probe batch, e.g. sample=x_val[:16] "
            "(an array, tensor, dict or tuple of model inputs) or a tf.data.Dataset."
        )
    if isinstance(sample, tf.data.Dataset):
        for batch in sample.take(1):
            inputs, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
            return inputs
        raise ValueError("Invalid value for argument `sample`: the dataset yielded no batch.")
    return sample


def _as_tensors(sample: Any) -> Any:
    tensors = tf.nest.map_structure(tf.convert_to_tensor, sample)
    for tensor in tf.nest.flatten(tensors):
        if tensor.shape.rank == 0 or tensor.shape[0] == 0:
            raise ValueError(
                f"Invalid value for argument `sample`: expected a batch (first axis = samples) "
                f"with at least one sample. Received a tensor of shape {tuple(tensor.shape)}."
            )
    return tensors


def check_writable(log_dir: str) -> None:
    """Fail early when `log_dir` cannot become a directory we write into.

    Raises:
        ValueError: an existing part of the path is a file, or a local directory is read-only.
    """
    if not log_dir:
        raise ValueError("Invalid value for argument `log_dir`: received an empty path.")
    path = log_dir
    while not tf.io.gfile.exists(path):
        parent = os.path.dirname(path.rstrip("/"))
        if not parent or parent == path:
            return
        path = parent
    if not tf.io.gfile.isdir(path):
        raise ValueError(
            f"Cannot write to log_dir={log_dir!r}: {path!r} exists and is not a directory. "
            "Pass a directory path."
        )
    if "://" not in path and not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(
            f"Cannot write to log_dir={log_dir!r}: no write permission on {path!r}. "
            "Pass a directory you can write to."
        )


def _writes_summaries(model: Any) -> bool:
    """False on the non-chief workers of a multi-worker strategy: only the chief writes."""
    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    return bool(strategy.extended.should_save_summary)


def _as_step(step: Any) -> int:
    if isinstance(step, bool):
        raise TypeError(f"Invalid step: received {step!r}; expected an integer step.")
    try:
        value = np.asarray(step.numpy() if hasattr(step, "numpy") else step)
    except Exception:
        value = np.asarray(None)
    if value.shape != () or not np.issubdtype(value.dtype, np.integer) or int(value) < 0:
        raise TypeError(
            f"Invalid step: received {step!r}. Expected a non-negative integer (a Python int, "
            "or an integer tf.Variable such as optimizer.iterations)."
        )
    return int(value)
