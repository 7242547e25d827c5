"""The tag scheme shared by the writer (`tbprobe.summaries`) and the readers (`tbprobe.events`,
`tbprobe.report`); importing it costs nothing (no TensorFlow).

Per probed output `<tag>`: the histogram `<tag>/activations`, the scalars `<tag>/<name>` for each
of `SCALAR_NAMES` and `MARGIN_NAMES`, and an image; once per run, the text `MANIFEST_TAG`.
"""

SCALAR_NAMES = ("sparsity", "dead_units", "mean", "std", "nonfinite")
MARGIN_NAMES = ("mean_minus_std", "mean_plus_std")  # the band of the mean +- std charts
HISTOGRAM_METRIC = "activations"
MANIFEST_TAG = "tbprobe/manifest"
