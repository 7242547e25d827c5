"""tbprobe: see what the hidden layers of a Keras 3 network do while it trains.

One line in a training loop logs, per layer, activation histograms, feature-map grids and health
scalars (sparsity, dead units, mean, std, non-finite fraction) to TensorBoard::

    model.fit(x, y, callbacks=[tbprobe.ProbeCallback("runs/baseline", sample=x_val[:16])])

Names are imported lazily, so `import tbprobe` (and the `tbprobe` command) does not import
TensorFlow until a TensorFlow-backed name is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Checks",
    "Finding",
    "FindingsError",
    "Probe",
    "ProbeCallback",
    "ProbeModel",
    "ProbeWriteError",
    "ProbedOutput",
    "TensorBoardHandle",
    "launch",
    "probe_model",
    "probe_tree",
    "select_layers",
]

_HOMES = {
    "Checks": "tbprobe.findings",
    "Finding": "tbprobe.findings",
    "FindingsError": "tbprobe.findings",
    "Probe": "tbprobe.probe",
    "ProbeCallback": "tbprobe.callback",
    "ProbeModel": "tbprobe.probing",
    "ProbeWriteError": "tbprobe.event_file",
    "ProbedOutput": "tbprobe.probing",
    "TensorBoardHandle": "tbprobe.launcher",
    "launch": "tbprobe.launcher",
    "probe_model": "tbprobe.probing",
    "probe_tree": "tbprobe.tree",
    "select_layers": "tbprobe.probing",
}

if TYPE_CHECKING:
    from tbprobe.callback import ProbeCallback
    from tbprobe.event_file import ProbeWriteError
    from tbprobe.findings import Checks, Finding, FindingsError
    from tbprobe.launcher import TensorBoardHandle, launch
    from tbprobe.probe import Probe
    from tbprobe.probing import ProbedOutput, ProbeModel, probe_model, select_layers
    from tbprobe.tree import probe_tree


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'tbprobe' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
