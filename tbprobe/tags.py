"""The tag scheme shared by the writer (`tbprobe.probe`, `tbprobe.summaries`) and the readers
(`tbprobe.runs`, `tbprobe.events`, `tbprobe.report`); importing it costs nothing (no TensorFlow).

A run folder holds tbprobe's event files in `PROBE_DIR`. Per probed output `<tag>`: the
histogram `<tag>/activations`, the scalars `<tag>/<name>` for each of `SCALAR_NAMES` and
`MARGIN_NAMES`, and at most one image `<tag>/<kind>`, a kind of `IMAGE_KINDS`; once per run,
the text `MANIFEST_TAG`. An attention layer's probabilities are a probed output of their own,
`<tag>/attention` (`<layer tag>/attention`), with the image `<tag>` itself (kind `ATTENTION`)
and the scalars `<layer tag>/<name>` for each of `ATTENTION_SCALAR_NAMES` instead.
"""

PROBE_DIR = "probe"  # <log_dir>/probe/ holds tbprobe's event files
SCALAR_NAMES = ("sparsity", "dead_units", "mean", "std", "nonfinite")
SATURATED = "saturated"  # only for outputs of saturating activations (sigmoid, tanh, softmax)
MARGIN_NAMES = ("mean_minus_std", "mean_plus_std")  # the band of the mean +- std charts
HISTOGRAM_METRIC = "activations"
FEATURE_MAPS = "feature_maps"  # rank-4 outputs: a grid of channels per shown sample
HEATMAP = "heatmap"  # rank-2 and rank-3 outputs
ATTENTION = "attention"  # attention probabilities: a grid of queries x keys per head
IMAGE_KINDS = (FEATURE_MAPS, HEATMAP, ATTENTION)
ATTENTION_SCALAR_NAMES = ("attention_entropy", "attention_entropy_min")
MANIFEST_TAG = "tbprobe/manifest"
HEALTH_TAG = "tbprobe/health"  # text: the findings, at each log where they changed
FINDINGS_TAG = "tbprobe/findings"  # scalar: how many findings are active, every log
RUN_TAGS = (MANIFEST_TAG, HEALTH_TAG, FINDINGS_TAG)  # about the whole run, not a layer
# With targets (tbprobe.gradients): per probed output, the histogram of dLoss/dOutput and its
# scalars; per layer with trainable weights (its path), the weight scalars and histogram.
GRADIENT_HISTOGRAM = "gradients"
GRADIENT_SCALAR_NAMES = ("gradient_rms", "gradient_nonfinite")
WEIGHT_SCALAR_NAMES = ("weight_rms", "weight_gradient_rms")
UPDATE_RATIO = "update_ratio"  # ||W_after - W_before|| / ||W_before|| of one optimizer step
WEIGHT_HISTOGRAM = "weights"
