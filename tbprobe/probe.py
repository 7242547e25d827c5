"""`Probe`: logs the probed activations of a model to TensorBoard, one compiled call per log step.

A log step runs one `tf.function`, traced once per `Probe` (twice when `images_every` > 1: with
and without images): the probe model's forward pass on the fixed sample, during which each
probed output, as its layer returns, is reduced (`tbprobe.stats.BatchedReductions`) and its image
prepared (`tbprobe.plans`); then the reductions of all outputs finish together. Only small
results leave the graph: one `[outputs, fields]` matrix and small uint8 images. On the host the
images become PNGs and everything one `Summary` protobuf written as one event
(`tbprobe.summaries`), inside `tf.summary.record_if(True)` so that another callback's gating
(Keras's TensorBoard `update_freq`) cannot drop it. When some output holds NaN, Inf or huge
values, a second compiled function (traced on first need) recomputes its reductions exactly.

Attention layers' probabilities (`tbprobe.attention`) give entropies and an image instead.

Events go to `<log_dir>/probe`, flushed after every log step; the tags are listed in
`tbprobe.tags` and the README. With `checks` (the default), the diagnosis of `tbprobe.monitor`
runs after each log: the scalar `tbprobe/findings` every log, the text `tbprobe/health` at the
logs where the findings changed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import tensorflow as tf

from tbprobe import summaries
from tbprobe.attention import attention_entropy
from tbprobe.event_file import EventFile, check_writable
from tbprobe.findings import Checks, Finding, resolve_checks
from tbprobe.gradient_log import GradientLog
from tbprobe.images import colormap_palette
from tbprobe.monitor import FindingsMonitor, add_health, log_change
from tbprobe.options import LogOptions, document_options, positive_int
from tbprobe.plans import OutputPlan, draw_images, plan_output
from tbprobe.probing import ProbedOutput, probe_model
from tbprobe.samples import as_step, batch_tensors, first_batch, writes_summaries
from tbprobe.selection import LayerSpec
from tbprobe.stats import (
    FIELDS,
    BatchedReductions,
    OutputReduction,
    layer_reductions_exact,
    unpack_rows,
)
from tbprobe.tags import ATTENTION, ATTENTION_SCALAR_NAMES, SATURATED
from tbprobe.targets import has_loss, split_sample

_ENCODER_THREADS = min(4, os.cpu_count() or 1)
_ENCODER = ThreadPoolExecutor(_ENCODER_THREADS, thread_name_prefix="tbprobe-png")
_EXACT = FIELDS.index("exact")
_SATURATED = FIELDS.index(SATURATED)


@document_options
class Probe:
    """Logs per-layer activation histograms, images and health scalars of `model`.

    Args:
        model: a built `keras.Model` (Sequential, Functional, nested or subclassed).
        log_dir: run directory (any path `tf.io.gfile` accepts); events go to `<log_dir>/probe`,
            a folder created at construction (event files only at the first log).
        sample: the fixed probe batch, shown at every step: numpy array, tensor, dict or tuple
            for multi-input models, or a `tf.data.Dataset` (its first batch, labels dropped).
        layers: `None` for every layer, or names, paths, glob patterns and layer classes.
        every: `log(step)` logs when `step % every == 0`.
        depth: deepest layer-path depth probed (1 = the model's own layers, 2 = one level
            inside blocks and nested models, ...), or None for every level.
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
        checks: the diagnosis after each log (`tbprobe.monitor`): a `tbprobe.Checks` of
            thresholds, True for the defaults, False for none. Findings are logged as WARNINGs
            of the `"tbprobe"` logger, written as `tbprobe/health` and `tbprobe/findings`, and
            returned by `findings()`.
        **options: how each output is logged (`tbprobe.options.LogOptions`):
            {options}

    Raises:
        ValueError: a bad argument, an unbuilt model, a sample the model cannot take, or a
            `log_dir` that cannot be written; all at construction.
        TypeError: an unknown option (the message names the closest valid one).

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
        depth: int | None = None,
        targets: Any = None,
        loss: Any = None,
        sample_weight: Any = None,
        update_ratio: bool | None = None,
        weight_histograms: bool = False,
        checks: Checks | bool | None = True,
        **options: Any,
    ):
        self.every = positive_int("every", every)
        self.options = LogOptions.from_kwargs(**options)
        self.log_dir = os.fspath(log_dir)
        self.probe_dir = check_writable(self.log_dir)

        sample, dataset_targets, dataset_weight = split_sample(sample)
        self.sample = batch_tensors(first_batch(sample))
        self.probe_model = probe_model(model, layers, sample=self.sample, depth=depth)
        self.outputs: list[ProbedOutput] = self.probe_model.probed_outputs
        plans = [plan_output(output, self.options) for output in self.outputs]
        self._plans = [plan for plan in plans if not plan.attention]
        self._attention_plans = [plan for plan in plans if plan.attention]
        if targets is None and has_loss(model, loss):
            # A labelled dataset's targets; without a loss, activations only, as before.
            targets, sample_weight = dataset_targets, dataset_weight
        self._gradient_log = self._gradient_log_for(
            model, targets, loss, sample_weight, update_ratio, weight_histograms
        )
        self._palette = colormap_palette(self.options.cmap)
        self._writes = writes_summaries(model)
        self._compute = tf.function(self._reduce_fast, autograph=False)
        self._compute_exact = tf.function(self._reduce_exact, autograph=False)
        self._events = EventFile(self.probe_dir)
        self._header_written = False
        self._summary = summaries.SummaryBuilder()
        self._image_summary = summaries.SummaryBuilder()
        self._logs = 0
        self._last: list[OutputReduction] | None = None
        resolved = resolve_checks(checks)
        self._monitor = None if resolved is None else FindingsMonitor(resolved)

    def log(self, step: int | Any) -> bool:
        """Log the probe batch's activations at `step` if `step % every == 0`.

        Args:
            step: the global step, a Python int or an integer `tf.Variable`/tensor such as
                `optimizer.iterations`.

        Returns:
            Whether anything was logged (False off-schedule, and on non-chief workers of a
            multi-worker strategy, which never write).

        Raises:
            tbprobe.ProbeWriteError: the step did not reach the event file (disk full, file
                system gone); the steps logged before are on disk.
        """
        step = as_step(step)
        self.measure_update(step)
        if step % self.every or not self._writes:
            return False
        with_images = self._logs % self.options.images_every == 0 and any(
            plan.image for plan in self._plans + self._attention_plans
        )
        reductions, entropies, images, extra = self._run(with_images)
        self._logs += 1
        first_log = not self._header_written
        if first_log:
            header = summaries.SummaryBuilder()
            plans = self._plans + self._attention_plans
            summaries.add_run_header(header, [self._manifest_row(plan) for plan in plans])
            self._events.write(step, header)
        builder = self._summary
        logged: dict[str, dict[str, float]] = {}
        for plan, values in zip(self._plans, reductions, strict=True):
            tag = plan.output.tag
            logged[tag] = values.scalars()
            summaries.add_layer_values(builder, tag, logged[tag], values.histogram())
            if plan.spec is not None and plan.spec.bounds is not None:
                logged[tag][SATURATED] = values.saturated
                builder.scalar(f"{tag}/{SATURATED}", values.saturated)
        for plan, row in zip(self._attention_plans, entropies, strict=True):
            layer_tag = plan.output.tag.removesuffix(f"/{ATTENTION}")
            logged.setdefault(layer_tag, {}).update(
                zip(ATTENTION_SCALAR_NAMES, row.tolist(), strict=True)
            )
            summaries.add_attention_values(builder, plan.output.tag, row)
        if self._gradient_log is not None:
            self._gradient_log.add_values(builder, extra, logged)
        if self._monitor is not None:
            change = self._monitor.update(step, logged)
            log_change(change)
            add_health(builder, change, text=change.changed or first_log)
        image_summaries = []
        if with_images:
            shown = [p for p in self._plans + self._attention_plans if p.image is not None]
            for plan, strings in zip(shown, self._encode(shown, images), strict=True):
                self._image_summary.images(plan.image_tag, strings)
            image_summaries.append(self._image_summary)
        self._events.write(step, builder, *image_summaries)
        self._events.flush(step)
        self._header_written = True
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
        return self._gradient_log.write_update_ratios(as_step(step), self._events)

    def stats(self) -> dict[str, dict[str, float]]:
        """Health scalars of the last log step (computed now if nothing was logged yet).

        Returns:
            `{tag: {"sparsity", "dead_units", "mean", "std", "nonfinite": float}}`.
        """
        if self._last is None:
            self._run(with_images=False)
        assert self._last is not None
        return {
            plan.output.tag: values.scalars()
            for plan, values in zip(self._plans, self._last, strict=True)
        }

    def findings(self) -> list[Finding]:
        """The diagnosis after the last log: every finding active (none with `checks=False`).

        Returns:
            `tbprobe.Finding`s (rule, tag, first step, last value, threshold, message, hint).
        """
        return [] if self._monitor is None else list(self._monitor.findings)

    def close(self) -> None:
        """Flush and close the event file; a later `log` appends to the run in a new file."""
        self._events.close()
        if self._gradient_log is not None and self._gradient_log.update_ratios is not None:
            self._gradient_log.update_ratios.drop()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Probe({len(self.outputs)} outputs -> {self.probe_dir!r}, every={self.every})"

    def _manifest_row(self, plan: OutputPlan) -> summaries.ManifestRow:
        output = plan.output
        layer_class = type(output.layer).__name__
        gradients, weights = (
            (False, False)
            if self._gradient_log is None
            else self._gradient_log.manifest_columns(output.path)
        )
        return summaries.ManifestRow(
            output.tag,
            layer_class,
            output.shape,
            output.dtype,
            plan.image,
            output.kind,
            gradients and not plan.attention,
            weights,
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

    def _encode(self, plans: list[OutputPlan], images: dict[str, np.ndarray]) -> list[list[bytes]]:
        """The image plugin's strings of each plan's image, in order. zlib releases the GIL, so
        the PNGs compress in a few threads, each given a run of images (one task per image
        would cost more in handoffs than small images take to compress)."""

        def encode(chunk: list[OutputPlan]) -> list[list[bytes]]:
            return [
                plan.host_image(images[plan.output.tag], self.options, self._palette)
                for plan in chunk
            ]

        size = -(-len(plans) // _ENCODER_THREADS)
        chunks = [plans[i : i + size] for i in range(0, len(plans), size)]
        return [strings for done in _ENCODER.map(encode, chunks) for strings in done]

    def _run(
        self, with_images: bool
    ) -> tuple[list[OutputReduction], np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Every output's reductions, the attention entropies `[attention outputs, 2]`, the
        device's part of the images and the gradient log's reductions, on the host."""
        matrix, entropies, images, extra = self._compute(self.sample, with_images)
        matrix = matrix.numpy()
        inexact = matrix[:, _EXACT] == 0
        if inexact.any():  # NaN, Inf or huge values: the exact branch, traced on first need
            exact = self._compute_exact(self.sample).numpy()
            exact[:, _SATURATED] = matrix[:, _SATURATED]  # counted on the finite elements
            matrix[inexact] = exact[inexact]
        self._last = unpack_rows(matrix)
        images = {tag: value.numpy() for tag, value in images.items()}
        extra = {key: value.numpy() for key, value in extra.items()}
        if self._gradient_log is not None:
            extra = self._gradient_log.fix_inexact(self.sample, extra)
        return self._last, entropies.numpy(), images, extra

    def _reduce_fast(
        self, sample: Any, with_images: bool
    ) -> tuple[tf.Tensor, tf.Tensor, dict[str, tf.Tensor], dict[str, tf.Tensor]]:
        o = self.options
        batch = BatchedReductions(
            [plan.spec for plan in self._plans if plan.spec is not None],
            o.buckets,
            o.zero_tol,
            o.histogram_sample,
        )
        index = {plan.output.tag: i for i, plan in enumerate(self._plans)}
        attention = {plan.output.tag: plan for plan in self._attention_plans}
        entropies: dict[str, tf.Tensor] = {}
        maps: dict[str, tf.Tensor] = {}

        def consume(output: ProbedOutput, x: tf.Tensor, mask: Any) -> list[tf.Tensor]:
            tag = output.tag
            if tag in attention:
                plan = attention[tag]
                entropies[tag] = tf.stack(attention_entropy(x, mask))
                made = [entropies[tag]]
            else:
                plan = self._plans[index[tag]]
                made = batch.reduce(index[tag], x)
            if with_images and plan.image is not None:
                maps[tag] = plan.image_maps(x, o)
                made.append(maps[tag])
            return made

        # Each output is reduced as soon as its layer returns, and the forward pass waits for
        # it: a log step's peak memory stays near the forward pass's (see run_consuming).
        # With gradients, the backward pass follows that forward pass (tbprobe.gradient_log).
        extra: dict[str, tf.Tensor] = {}
        if self._gradient_log is None:
            self.probe_model.run_consuming(sample, consume)
        else:
            extra = self._gradient_log.run(sample, consume)
        drawn = [plan for plan in self._plans + self._attention_plans if plan.output.tag in maps]
        images = draw_images(drawn, maps, o)
        rows = [entropies[plan.output.tag] for plan in self._attention_plans]
        attention_rows = tf.stack(rows) if rows else tf.zeros([0, 2])
        return batch.finish(), attention_rows, images, extra

    def _reduce_exact(self, sample: Any) -> tf.Tensor:
        o = self.options
        activations = self.probe_model(sample, training=False)
        return tf.stack(
            [
                layer_reductions_exact(
                    activations[plan.output.tag],
                    o.buckets,
                    o.zero_tol,
                    None if plan.spec is None else plan.spec.unit_axis,
                )
                for plan in self._plans
            ]
        )
