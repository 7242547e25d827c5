"""What the launcher's `tensorboard.compat.notf` stub buys: TensorBoard's start time with and without.

Each round starts TensorBoard the way `tbprobe.launch` does (`tensorboard_command`, a session of
its own) on a small run, once with the stub (TensorBoard reads files with its bundled TensorFlow
stub) and once without (TensorBoard imports TensorFlow), alternating, and times from the start
of the process until ``/data/runs`` lists the run (polled every 0.2 s). Prints each time and the
median per variant.

Usage: ``python scripts/bench_tensorboard_start.py [--rounds 3]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a checkout, not installed

from tbprobe.tensorboard_process import (
    page_urls,
    pick_port,
    start_in_new_session,
    tensorboard_command,
    terminate_group,
    wait_until_serving,
)

HOST = "localhost"
VARIANTS = {"stub (tbprobe's default)": False, "TensorFlow imported": True}


def write_small_run(run: Path) -> None:
    """One event file of 20 steps of two scalars in `run/probe`, written without TensorFlow."""
    # The writer opens files through TensorBoard's file system layer: its stub, as in the child.
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(run / "probe"))
    for step in range(20):
        values = [
            Summary.Value(tag="dense/sparsity", simple_value=step / 20),
            Summary.Value(tag="dense/mean", simple_value=1.0 / (step + 1)),
        ]
        writer.add_event(Event(step=step, wall_time=time.time(), summary=Summary(value=values)))
    writer.close()


def start_seconds(logdir: Path, workdir: Path, with_tensorflow: bool) -> float:
    """Seconds from starting TensorBoard on `logdir` until it lists a run."""
    port = pick_port(HOST, None)
    command = tensorboard_command(logdir, HOST, port, {}, "bench", with_tensorflow=with_tensorflow)
    log = workdir / f"tensorboard-{port}.log"
    started = time.perf_counter()
    process = start_in_new_session(command, log)
    try:
        wait_until_serving(process, page_urls(HOST, port)[1], log, timeout=300.0)
        return time.perf_counter() - started
    finally:
        terminate_group(process, timeout=10.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="starts per variant (default 3)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tbprobe-bench-tb-") as tmp:
        workdir = Path(tmp)
        write_small_run(workdir / "runs" / "small")
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for round_ in range(args.rounds):
            for name, with_tensorflow in VARIANTS.items():
                seconds = start_seconds(workdir / "runs", workdir, with_tensorflow)
                times[name].append(seconds)
                print(f"round {round_ + 1}: {name}: {seconds:.1f} s", flush=True)
    for name, values in times.items():
        listed = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name}: median {statistics.median(values):.1f} s ({listed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
