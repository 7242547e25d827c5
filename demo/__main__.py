"""tbprobe's demo: why does one run learn and the other not? Look at its hidden layers.

Trains the same small CNN on generated shapes twice, with one difference, the learning rate:

* `baseline`: Adam, learning rate 1e-3. It learns.
* `high_lr`:  Adam, learning rate 3e-2. Its accuracy stays at chance. tbprobe shows why: within
  the first epoch its ReLU layers go dead (sparsity and dead_units jump to 1, layer by layer),
  and its diagnosis says so as it trains: one "dead layer" warning per layer, printed here.

Each run has tbprobe's callback added in one line beside Keras's own TensorBoard callback. Then
TensorBoard starts on both runs, named, side by side (skipped with --no-launch or CI=true), until
Ctrl-C (or SIGTERM), which stops it and ends the demo with status 0; interrupted before, the demo
ends with one line and status 130.

Usage: python -m demo [--runs-dir runs] [--epochs 6] [--train-size 3000] [--no-launch] [--port N]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

RUNS = {"baseline": 1e-3, "high_lr": 3e-2}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.split("\n")[0])
    parser.add_argument("--runs-dir", default="runs", help="where the runs go (default: runs)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run (default: 6)")
    parser.add_argument("--train-size", type=int, default=3000, help="training images")
    parser.add_argument(
        "--no-launch",
        action="store_true",
        default=os.environ.get("CI", "").lower() == "true",
        help="do not start TensorBoard afterwards (default when CI=true)",
    )
    parser.add_argument("--port", type=int, default=None, help="TensorBoard port (default: free)")
    return parser.parse_args(argv)


def train_run(name: str, learning_rate: float, run_dir: Path, data: tuple, epochs: int) -> dict:
    """Train one run with ProbeCallback beside Keras's TensorBoard callback."""
    import keras

    import tbprobe
    from demo.model import build_cnn, compile_cnn

    (x, y), (x_val, y_val) = data
    model = compile_cnn(build_cnn(seed=0), learning_rate)
    print(f"\n== run {name!r}: Adam, learning rate {learning_rate:g} -> {run_dir}", flush=True)
    probe = tbprobe.ProbeCallback(run_dir, sample=x_val[:16])
    history = model.fit(
        x,
        y,
        batch_size=64,
        epochs=epochs,
        validation_data=(x_val, y_val),
        verbose=2,
        callbacks=[keras.callbacks.TensorBoard(run_dir), probe],
    )
    return {
        "val_accuracy": history.history["val_accuracy"][-1],
        "stats": probe.probe.stats(),
        "findings": probe.probe.findings(),
    }


def print_summary(results: dict[str, dict]) -> None:
    """Per layer and run: dead units and sparsity at the last epoch, and the accuracy."""
    print("\n== what tbprobe saw after the last epoch")
    print(f"{'':10}" + "".join(f"{name:^24}" for name in results))
    print(f"{'layer':10}" + f"{'dead units':>12}{'sparsity':>12}" * len(results))
    for layer in next(iter(results.values()))["stats"]:
        row = "".join(
            f"{r['stats'][layer]['dead_units']:>12.0%}{r['stats'][layer]['sparsity']:>12.0%}"
            for r in results.values()
        )
        print(f"{layer:10}{row}")
    accuracy = "".join(f"{r['val_accuracy']:>24.0%}" for r in results.values())
    print(f"{'val acc':10}{accuracy}")
    print(f"{'findings':10}" + "".join(f"{len(r['findings']):>24}" for r in results.values()))


def show_findings() -> None:
    """Print tbprobe's findings (WARNINGs of the "tbprobe" logger) as they appear, on stdout."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
    logger = logging.getLogger("tbprobe")
    logger.addHandler(handler)
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Run the demo; Ctrl-C or SIGTERM ends it with one line and exit status 130."""
    args = parse_args(argv)
    # SIGTERM (an IDE's stop button, `kill PID`) unwinds like Ctrl-C, so that the TensorBoard
    # started below is stopped too: by default SIGTERM ends Python at once, skipping that. SIGINT
    # is set too, as a process started in the background may inherit it ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("\ndemo: interrupted", file=sys.stderr, flush=True)
        return 130


def run(args: argparse.Namespace) -> int:
    """Train both runs, print what tbprobe saw, then serve them in TensorBoard until Ctrl-C."""
    show_findings()
    started = time.perf_counter()
    from demo.data import make_shapes

    data = (make_shapes(args.train_size, seed=0), make_shapes(500, seed=1))
    runs_dir = Path(args.runs_dir)
    run_dirs = {name: runs_dir / name for name in RUNS}
    results = {}
    for name, learning_rate in RUNS.items():
        run_dir = run_dirs[name]
        if run_dir.exists():  # a fresh model restarts at step 0: old events would overlap
            shutil.rmtree(run_dir)
        results[name] = train_run(name, learning_rate, run_dir, data, args.epochs)
    print_summary(results)
    print(f"\nTrained both runs in {time.perf_counter() - started:.0f} s.")
    print(f"Compare them offline: tbprobe report {runs_dir} -o report/")
    print(f"Diagnose them offline: tbprobe check {runs_dir}")
    if args.no_launch:
        print(f"Browse them: tbprobe launch {' '.join(f'{n}={d}' for n, d in run_dirs.items())}")
        return 0
    import tbprobe

    with tbprobe.launch(run_dirs, port=args.port) as board:
        try:
            print(f"\nTensorBoard: {board.url} (pid {board.pid}; Ctrl-C to stop)", flush=True)
            while board.running:
                time.sleep(1)
        except KeyboardInterrupt:
            print("\nStopping TensorBoard.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
