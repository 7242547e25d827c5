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
(rank-4 outputs) or `<tag>/heatmap` (rank-2 and rank-3 outputs) images; once per `Probe`, the
text `tbprobe/manifest` and a custom-scalars layout.
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
from tbprobe.gradient_log import GradientLog
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
from tbprobe.tags import FEATURE_MAPS, PROBE_DIR
from tbprobe.targets import has_loss, split_sample


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
        targets: the probe batch's targets (array, tensor, dict or tuple for multi-output
            models): turns on one backward pass per log step and the gradient tags (see
            `tbprobe.gradient_log`). A dataset `sample` gives its first batch's targets and
            sample weights when a loss is available. None: no gradients.
        loss: None for the compiled loss (`model.compute_loss`), or a callable
            `(y_true, y_pred) -> scalar` for uncompiled models and custom loops.
        sample_weight: optional sample weights of the targets, for the loss.
        update_ratio: log `<layer>/update_ratio` of the training step after each log (needs
            `log` or `measure_update` called after that step); None: on with targets.
        weight_histograms: log a `<layer>/weights` histogram per layer with trainable weights.

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
        targets: Any = None,
        loss: Any = None,
        sample_weight: Any = None,
        update_ratio: bool | None = None,
        weight_histograms: bool = False,
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

        sample, dataset_targets, dataset_weight = split_sample(sample)
        self.sample = _as_tensors(first_batch(sample))
        self.probe_model = probe_model(model, layers, sample=self.sample)
        self.outputs: list[ProbedOutput] = self.probe_model.probed_outputs
        self._plans = [self._plan(output) for output in self.outputs]
        if targets is None and has_loss(model, loss):
            # A labelled dataset's targets; without a loss, activations only, as before.
            targets, sample_weight = dataset_targets, dataset_weight
        self._gradient_log = self._gradient_log_for(
            model, targets, loss, sample_weight, update_ratio, weight_histograms
        )
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
        self.measure_update(step)
        if step % self.every or not self._writes:
            return False
        reductions, images, extra = self._run()
        self._events()
        if not self._header_written:
            header = summaries.SummaryBuilder()
            summaries.add_run_header(header, [self._manifest_row(plan) for plan in self._plans])
            header.write(self._writer, step)
            self._header_written = True
        builder = self._summary
        for plan, row in zip(self._plans, reductions, strict=True):
            values = dict(zip(FIELDS, row[: len(FIELDS)], strict=True))
            rows = histogram_rows(row[len(FIELDS) :], values["low"], values["high"])
            summaries.add_layer_values(builder, plan.output.tag, values, rows)
            if plan.image is not None:
                builder.images(f"{plan.output.tag}/{plan.image}", images[plan.output.tag])
        if self._gradient_log is not None:
            self._gradient_log.add_values(builder, extra)
        builder.write(self._writer, step)
        self._writer.flush()
        if self._gradient_log is not None:
            self._gradient_log.after_log(step)
        return True

    def measure_update(self, step: int | Any) -> bool:
        """Write the update ratios of the training step that followed the last log.

        `log(step)` calls it first, so a loop calling `log` after every training step needs
        nothing else. Call it yourself after the training step that follows a log when `log`
        is not called at every step (see README, "Gradients and weights").

        Args:
            step: the current step, one more than the last logged step.

        Returns:
            Whether update ratios were written (at the last logged step).
        """
        if self._gradient_log is None or not self._writes:
            return False
        return self._gradient_log.write_update_ratios(_as_step(step), self._events)

    def _events(self) -> Any:
        """The event file writer, created on first use."""
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.probe_dir)
        return self._writer

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
        if self._gradient_log is not None and self._gradient_log.update_ratios is not None:
            self._gradient_log.update_ratios.drop()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Probe({len(self.outputs)} outputs -> {self.probe_dir!r}, every={self.every})"

    def _plan(self, output: ProbedOutput) -> _Plan:
        rank = len(output.shape)
        channels_first = getattr(output.layer, "data_format", None) == "channels_first"
        if rank < 2:
            unit_axis = None
        else:
            unit_axis = 1 if channels_first and rank >= 3 else -1
        image = describe_image(output.shape) if self.options.images else None
        return _Plan(output, unit_axis, image, channels_first and rank == 4)

    def _manifest_row(self, plan: _Plan) -> summaries.ManifestRow:
        output = plan.output
        layer_class = type(output.layer).__name__
        gradients, weights = (
            (False, False)
            if self._gradient_log is None
            else self._gradient_log.manifest_columns(output.path)
        )
        return summaries.ManifestRow(
            output.tag, layer_class, output.shape, output.dtype, plan.image, gradients, weights
        )

    def _gradient_log_for(
        self,
        model: Any,
        targets: Any,
        loss: Any,
        sample_weight: Any,
        update_ratio: bool | None,
        weight_histograms: bool,
    ) -> GradientLog | None:
        """The gradient and weight part of the log step, or None when nothing of it is asked."""
        if update_ratio is None:
            update_ratio = targets is not None
        if targets is None and not update_ratio and not weight_histograms:
            return None
        return GradientLog(
            model,
            self.probe_model,
            self.sample,
            targets,
            sample_weight,
            loss,
            bool(update_ratio),
            weight_histograms,
            self.options,
        )

    def _run(self) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Reductions `[outputs, FIELDS + buckets]`, encoded images and the gradient log's
        reductions, on the host."""
        reductions, images, extra = self._compute(self.sample)
        reductions = reductions.numpy()
        inexact = reductions[:, FIELDS.index("exact")] == 0
        if inexact.any():  # NaN, Inf or huge values: the exact branch, traced on first need
            reductions[inexact] = self._compute_exact(self.sample).numpy()[inexact]
        self._last = reductions
        extra = {key: value.numpy() for key, value in extra.items()}
        if self._gradient_log is not None:
            extra = self._gradient_log.fix_inexact(self.sample, extra)
        return reductions, {tag: value.numpy() for tag, value in images.items()}, extra

    def _reduce_fast(
        self, sample: Any
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor], dict[str, tf.Tensor]]:
        o = self.options
        plans = {plan.output.tag: plan for plan in self._plans}
        rows, images = {}, {}

        def consume(tag: str, x: tf.Tensor) -> list[tf.Tensor]:
            plan = plans[tag]
            rows[tag] = layer_reductions(
                x, o.buckets, o.zero_tol, plan.unit_axis, o.histogram_sample
            )
            if plan.image is None:
                return [rows[tag]]
            images[tag] = encode_png_images(self._image(plan, x), o.palette)
            return [rows[tag], images[tag]]

        # Each output is reduced as soon as its layer returns, and the forward pass waits for
        # it: a log step's peak memory stays near the forward pass's (see run_consuming).
        # With gradients, the backward pass follows that forward pass (tbprobe.gradient_log).
        extra = {}
        if self._gradient_log is None:
            self.probe_model.run_consuming(sample, consume)
        else:
            extra = self._gradient_log.run(sample, consume)
        return tf.stack([rows[tag] for tag in plans]), images, extra

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
