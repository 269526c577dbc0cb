"""Ctrl-C stops a long simulation: exit 130 and one line, in the pure build and in the
compiled one (where the simulator's loop runs no bytecode and so never handles a signal
unless it offers Python the chance: engine/_native.py `checkpoint`).

Each test starts a simulation that would run for many minutes, waits until it is busy in
the loop (it has used a second of CPU), sends SIGINT, and expects it to end well before
the simulation could have."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Every attempt fails and is retried at once: 100 million attempts, about as many instants.
ENDLESS = "steps:\n  - {name: flaky, duration: 1, retries: 100000000, fails: {server: 100000000}}\n"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def interrupt_when_busy(folder: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # As from a terminal: whatever this test runs under (a shell's background job ignores
    # SIGINT, and a child inherits that), the command starts with SIGINT's default.
    p = subprocess.Popen(
        [sys.executable, "-m", "abreast", *args], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        while cpu_seconds(p.pid) < 1.0:
            assert p.poll() is None, p.communicate()
            try:
                p.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)  # the whole simulation would take many minutes
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, out, err


@pytest.mark.parametrize(
    "args",
    [
        ["simulate", "endless.yaml"],
        ["simulate", "endless.yaml", "--format", "json", "--events", "endless.jsonl"],
        ["whatif", "endless.yaml", "--set", "max_parallel_steps=1,2"],
        ["advise", "endless.yaml"],
    ],
    ids=["simulate", "simulate --events", "whatif", "advise"],
)
def test_ctrl_c_stops_a_long_simulation_with_exit_130(tmp_path, args):
    (tmp_path / "endless.yaml").write_text(ENDLESS)
    code, out, err = interrupt_when_busy(tmp_path, *args)
    assert code == 130, err
    assert err.strip() == "cancelled" and "Traceback" not in err
    assert out == ""


def test_ctrl_c_also_stops_the_sequential_baseline_simulated_beside_it(tmp_path):
    # 20,000 executions: the sequential baseline runs in a forked child (simulator/sim.py).
    n = 20_000
    doc = {
        "policy": {"max_parallel_targets": n},
        "targets": [{"name": f"t{i}", "roles": ["x"]} for i in range(n)],
        "steps": [{"name": "flaky", "roles": ["x"], "duration": 1, "retries": 100_000_000, "fails": {"*": 100_000_000}}],
    }
    path = tmp_path / f"wide-{os.getpid()}.json"
    path.write_text(json.dumps(doc))
    code, _, err = interrupt_when_busy(tmp_path, "simulate", path.name)
    assert code == 130, err
    # No process is left simulating it: the forked child was stopped with its parent.
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if path.name.encode() in f.read():
                    left.append(pid)
        except OSError:
            pass
    assert left == []
