"""tbprobe.tensorboard_process: the TensorBoard internal it relies on still works as it expects.

The launcher starts TensorBoard with a module `tensorboard.compat.notf` put in `sys.modules`, so
that `tensorboard/compat/__init__.py` resolves `tensorboard.compat.tf` to TensorBoard's bundled
TensorFlow stub instead of importing TensorFlow. Starting, serving and stopping TensorBoard are
tested through the launcher in test_launcher.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tbprobe.tensorboard_process import tensorboard_command

ROOT = Path(__file__).resolve().parent.parent
# What TensorBoard's file system layer resolves to, and whether TensorFlow got imported.
RESOLVE_TF = (
    "from tensorboard.compat import tf; tf.io.gfile.exists('.'); "
    "print(tf.__name__, 'tensorflow' in sys.modules)"
)


def resolved_in_tensorboards_python(with_tensorflow: bool) -> list[str]:
    """What `RESOLVE_TF` prints when run with the start-up program of the launcher's command."""
    command = tensorboard_command(
        Path("."), "localhost", 6006, {}, "t", with_tensorflow=with_tensorflow
    )
    program = command[command.index("-c") + 1]
    start_up, found, _ = program.partition("sys.argv[0] = 'tensorboard'")
    assert found, program
    done = subprocess.run(
        [sys.executable, "-c", start_up + RESOLVE_TF],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return done.stdout.split()


def test_the_notf_stub_keeps_tensorflow_out_of_tensorboard():
    resolved = resolved_in_tensorboards_python(with_tensorflow=False)
    assert resolved == ["tensorboard.compat.tensorflow_stub", "False"], (
        "TensorBoard no longer resolves tensorboard.compat.tf to its TensorFlow stub when the "
        "module tensorboard.compat.notf exists (see tensorboard/compat/__init__.py): the "
        "launcher's _STUB_TENSORFLOW no longer keeps TensorFlow out of TensorBoard. Find the new "
        "switch, or drop the stub after measuring with scripts/bench_tensorboard_start.py. "
        f"Resolved: {resolved}"
    )


@pytest.mark.slow
def test_without_the_stub_tensorboard_imports_tensorflow():
    # The control: the stub is what makes the difference above.
    resolved = resolved_in_tensorboards_python(with_tensorflow=True)
    assert resolved == ["tensorflow", "True"]
