"""The tbprobe dashboard: a TensorBoard plugin (a "tbprobe" tab) over the runs tbprobe writes.

`tbprobe.dashboard.plugin.TbprobePlugin` is registered through the `tensorboard_plugins` entry
point, so any TensorBoard in an environment where tbprobe is installed shows the tab when a run
holds tbprobe data. `tbprobe.dashboard.data` reads through TensorBoard's data provider;
``static/`` holds the ES-module frontend (no build step).
"""

PLUGIN_NAME = "tbprobe"  # the plugin's routes (data/plugin/tbprobe/) and its tab (#tbprobe)
