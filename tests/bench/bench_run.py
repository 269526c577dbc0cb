"""Benchmark: 5,000 no-op executions through `abreast run` against `xargs -P10`.

500 targets x 10 steps, `run: "true"`, window 10 (so at most 10 commands at once, as
with `xargs -P10`), every event committed to a fresh SQLite file. Both run as whole
processes, side by side, alternating, several rounds; we report each time and the
ratio of the medians.

    python tests/bench/bench_run.py [--rounds 3] [--targets 500] [--steps 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def scenario(targets: int, steps: int) -> dict:
    return {
        "name": f"bench {targets} targets x {steps} steps",
        "policy": {"max_parallel_targets": 10},
        "targets": [{"name": f"t{i:04d}", "roles": ["app"]} for i in range(targets)],
        "steps": [{"name": f"step-{j:02d}", "roles": ["app"], "run": "true"} for j in range(steps)],
    }


def timed(cmd: list[str] | str, cwd: Path, shell: bool = False) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, shell=shell, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--targets", type=int, default=500)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    n = args.targets * args.steps
    a_times, x_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "bench.yaml").write_text(yaml.safe_dump(scenario(args.targets, args.steps)))
        for r in range(args.rounds):
            db = folder / f"round-{r}.db"
            a = timed([sys.executable, "-m", "abreast", "run", "bench.yaml", "--db", str(db), "--quiet"], folder)
            x = timed(f"seq {n} | xargs -P10 -I{{}} sh -c true", folder, shell=True)
            a_times.append(a)
            x_times.append(x)
            print(f"round {r + 1}: abreast run {a:.2f}s   xargs -P10 {x:.2f}s   ratio {a / x:.2f}", flush=True)
        from engine.store import SqliteStore

        store = SqliteStore(folder / "round-0.db")
        summary = store.deployments()[0]
        executions = sum(1 for e in store.read(summary.id) if type(e).__name__ == "ExecutionFinished")
        store.close()
    assert executions == n, (executions, n)
    am, xm = statistics.median(a_times), statistics.median(x_times)
    print(f"\n{n:,} executions, {summary.events:,} events committed: abreast run median {am:.2f}s, "
          f"xargs -P10 median {xm:.2f}s, ratio {am / xm:.2f} (cores: {os.cpu_count()})")


if __name__ == "__main__":
    main()
