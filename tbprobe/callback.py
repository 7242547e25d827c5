"""`ProbeCallback`: tbprobe in `model.fit` with one line.

Step axis: every log is made at the global training step, the optimizer's iteration count
(`model.optimizer.iterations`, the number of batches trained so far, across `fit` calls). So
epoch-level and batch-level logs share one axis, a second `fit` continues it, and runs of the
same batch size line up in TensorBoard.

Keras 3 dispatches batches asynchronously unless a callback overrides a batch-level hook, so
`on_train_batch_end` exists on an instance only when `every_n_batches` is given or update
ratios are measured (after a log, the next batch's end measures the optimizer's step). On the
TensorFlow backend Keras 3.15 never dispatches asynchronously (`IS_THREAD_SAFE = False`), so
the hook costs one Python call per batch there.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import keras

from tbprobe.event_file import check_writable
from tbprobe.findings import Checks, FindingsError, resolve_checks
from tbprobe.options import LogOptions, document_options, positive_int
from tbprobe.probe import Probe
from tbprobe.samples import first_batch
from tbprobe.selection import LayerSpec, check_depth
from tbprobe.targets import has_loss, split_sample

ON_FINDING = ("warn", "stop", "raise")


@document_options
class ProbeCallback(keras.callbacks.Callback):
    """Logs what every layer of the model does, at the end of epochs or every N batches.

    Args:
        log_dir: run directory; events go to `<log_dir>/probe` (created at construction, event
            files only at the first log), beside Keras's TensorBoard callback's `train/` and
            `validation/` when it shares the directory.
        sample: the fixed probe batch (array, tensor, dict or tuple of inputs, or a
            `tf.data.Dataset` whose first batch is used, labels dropped).
        layers: `None` for every layer, or names, paths, glob patterns and layer classes.
        depth: deepest layer-path depth probed (1 = the model's own layers, 2 = one level
            inside blocks and nested models, ...), or None for every level.
        every_n_epochs: log at the end of every this many epochs.
        every_n_batches: also log every this many training batches (None: epoch ends only).
            A batch hook costs one Python call per batch (see the module docstring).
        log_on_train_begin: also log when training starts, so that the charts begin with the
            initial state (skipped when that step was logged already, e.g. by an earlier fit).
        targets: the probe batch's targets: turns on gradients (see `Probe`); a labelled
            dataset `sample` gives its own when the model is compiled with a loss.
        loss: None for the compiled loss, or a callable `(y_true, y_pred) -> scalar`.
        update_ratio: log `<layer>/update_ratio`, measured at the end of the batch after each
            log (None: on with targets).
        weight_histograms: log `<layer>/weights` histograms.
        checks: the diagnosis after each log: a `tbprobe.Checks`, True for the defaults,
            False for none (see `Probe`).
        on_finding: what a log with findings does besides logging them as WARNINGs: `"warn"`
            nothing more, `"stop"` sets `model.stop_training` (fit ends after this batch or
            epoch), `"raise"` raises `tbprobe.FindingsError` carrying the findings.
        **options: how each output is logged, as for `tbprobe.Probe`:
            {options}

    Raises:
        ValueError: a bad argument or a `log_dir` that cannot be created, at construction; a
            sample that does not fit the model, when the callback is given the model
            (`set_model`, at the start of `fit`).
        TypeError: an unknown option (the message names the closest valid one).

    Example:
        >>> model.fit(x, y, epochs=5,
        ...           callbacks=[tbprobe.ProbeCallback("runs/baseline", sample=x_val[:16])])
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        sample: Any,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        every_n_epochs: int = 1,
        every_n_batches: int | None = None,
        log_on_train_begin: bool = True,
        depth: int | None = None,
        checks: Checks | bool | None = True,
        on_finding: str = "warn",
        targets: Any = None,
        loss: Any = None,
        update_ratio: bool | None = None,
        weight_histograms: bool = False,
        **options: Any,
    ):
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        self.every_n_epochs = positive_int("every_n_epochs", every_n_epochs)
        self.every_n_batches = (
            None if every_n_batches is None else positive_int("every_n_batches", every_n_batches)
        )
        LogOptions.from_kwargs(**options)  # an error now, not when fit starts
        self.options = options
        sample, dataset_targets, self.sample_weight = split_sample(sample)
        self.sample = first_batch(sample)
        self.targets = targets
        self._dataset_targets = dataset_targets if targets is None else None
        self.loss = loss
        self.update_ratio = update_ratio
        self.weight_histograms = weight_histograms
        self.layers = layers
        self.depth = check_depth(depth)
        self.log_on_train_begin = bool(log_on_train_begin)
        self.checks = resolve_checks(checks)
        if on_finding not in ON_FINDING:
            raise ValueError(
                f"Invalid value for argument `on_finding`. Received: on_finding={on_finding!r}. "
                f"Expected one of {', '.join(map(repr, ON_FINDING))}."
            )
        self.on_finding = on_finding
        check_writable(self.log_dir)
        self.probe: Probe | None = None
        self._epoch_start_step = 0
        self._last_logged: int | None = None
        self._logged_once = False
        if update_ratio is None:  # on with targets, given or from a labelled dataset
            update_ratio = targets is not None or dataset_targets is not None
        self._batch_hook = self.every_n_batches is not None or bool(update_ratio)
        if self._batch_hook:
            self.on_train_batch_end = self._on_train_batch_end

    def set_model(self, model: Any) -> None:
        """Attach to `model`; builds the probe at once when the model is built."""
        super().set_model(model)
        if model.built:
            self._probe_for(model)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._probe_for(self.model)
        step = self._global_step()
        if self._last_logged is None:
            self._last_logged = step  # batch logs count from here
        if self.log_on_train_begin:
            self._log(step)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._batch_hook:
            self._epoch_start_step = self._global_step()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every_n_epochs == 0:
            self._log(self._global_step())

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.probe is not None:
            self.probe.close()

    def _on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        # `batch` is the index of the last batch run (steps_per_execution may run several);
        # the global step is derived without reading a variable, which would block dispatch.
        step = self._epoch_start_step + batch + 1
        if self.probe is not None:
            self.probe.measure_update(step)
        if self.every_n_batches is None or self._last_logged is None:  # set by on_train_begin
            return
        if step // self.every_n_batches > self._last_logged // self.every_n_batches:
            self._log(step)

    def _log(self, step: int) -> None:
        if self.probe is not None and (step != self._last_logged or not self._logged_once):
            self.probe.log(step)
            self._last_logged = step
            self._logged_once = True
            findings = self.probe.findings()
            if findings and self.on_finding == "stop":
                self.model.stop_training = True
            elif findings and self.on_finding == "raise":
                raise FindingsError(findings)

    def _global_step(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def _probe_for(self, model: Any) -> None:
        if self.probe is not None and self.probe.probe_model.probed_model is model:
            return
        self.probe = Probe(
            model,
            self.log_dir,
            self.sample,
            layers=self.layers,
            depth=self.depth,
            checks=False if self.checks is None else self.checks,
            targets=self._targets_for(model),
            loss=self.loss,
            sample_weight=None if self.targets is not None else self.sample_weight,
            update_ratio=self.update_ratio,
            weight_histograms=self.weight_histograms,
            **self.options,
        )

    def _targets_for(self, model: Any) -> Any:
        """The given targets, else the dataset sample's when `model` has a loss."""
        if self.targets is not None or not has_loss(model, self.loss):
            return self.targets
        return self._dataset_targets
