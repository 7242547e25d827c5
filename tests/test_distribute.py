"""ProbeCallback inside tf.distribute strategies, each run in fresh processes for real."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tb_helpers import read_events

SCRIPT = Path(__file__).with_name("distributed_fit.py")
TIMEOUT = 600  # generous: two TensorFlow starts on a shared 2-core machine


def run_workers(
    strategy: str, loop: str, log_dir: Path, tf_configs: list[dict] | None = None
) -> list[dict]:
    configs = tf_configs or [None]
    processes = []
    for config in configs:
        env = dict(os.environ)
        env.pop("TF_CONFIG", None)
        if config is not None:
            env["TF_CONFIG"] = json.dumps(config)
        command = [sys.executable, str(SCRIPT), "--strategy", strategy, "--loop", loop]
        command += ["--log-dir", str(log_dir)]
        processes.append(
            subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=TIMEOUT)
            assert process.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return results


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def assert_one_run_logged(log_dir: Path, steps: list[int], conv_mean: float) -> None:
    assert len(list((log_dir / "probe").glob("events.out.tfevents.*"))) == 1
    events = read_events(log_dir / "probe")
    assert events["conv/mean"]["steps"] == steps
    assert {"conv/feature_maps", "gap/sparsity", "head/activations"} <= set(events)
    assert events["conv/mean"]["values"][-1] == pytest.approx(conv_mean, rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["fit", "custom"])
def test_mirrored_strategy_on_two_logical_devices(tmp_path, loop):
    (result,) = run_workers("mirrored", loop, tmp_path)
    assert result["replicas"] == 2
    assert result["writes"] is True
    # 64 samples, global batch 16: 4 steps an epoch.
    # ProbeCallback also logs the initial state; the custom loop logs every 4 steps.
    steps = [0, 4, 8] if loop == "fit" else [4, 8]
    assert_one_run_logged(tmp_path, steps, result["conv_mean"])


@pytest.mark.slow
def test_multi_worker_strategy_writes_from_the_chief_only(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    configs = [{"cluster": cluster, "task": {"type": "worker", "index": i}} for i in range(2)]
    chief, worker = run_workers("multi_worker", "custom", tmp_path, configs)
    assert (chief["replicas"], worker["replicas"]) == (2, 2)
    assert (chief["writes"], worker["writes"]) == (True, False)
    assert chief["step"] == worker["step"] == 8
    assert chief["logged"] == [False, False, False, True] * 2
    assert worker["logged"] == [False] * 8
    # Same synchronized weights on both workers; the only event file is the chief's.
    assert worker["conv_mean"] == pytest.approx(chief["conv_mean"], rel=1e-6)
    assert_one_run_logged(tmp_path, [4, 8], chief["conv_mean"])
