"""Benchmark: Monte Carlo with `abreast whatif --runs 1000` on a 500-execution deployment.

The deployment: 10 steps in blocks of 2 on 50 targets each... specifically 5 blocks of
2 parallel steps, each step on its own half of 100 targets (50 executions per step,
500 in all), lognormal durations, window 10. One row, 1,000 runs, as a whole process;
the requirement is under 10 s on this 2-core machine. Also reports the same runs on
one core (ABREAST_WORKERS=1) to show what the second core buys.

    python tests/bench/bench_montecarlo.py [--runs 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def scenario() -> dict:
    steps = []
    for b in range(5):
        for h in range(2):
            step = {"name": f"b{b}-h{h}", "roles": [f"h{h}"], "window": 10,
                    "duration": {"dist": "lognormal", "median": 30, "p95": 90}}
            if h:
                step["start"] = "with-previous"
            steps.append(step)
    return {"name": "monte carlo bench", "targets": [{"name": f"t{i:03d}", "roles": [f"h{i % 2}"]} for i in range(100)], "steps": steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mc.yaml"
        path.write_text(yaml.safe_dump(scenario()))
        cmd = [sys.executable, "-m", "abreast", "whatif", str(path), "--set", "max_parallel_steps=10", "--runs", str(args.runs), "--format", "json"]
        results = {}
        for label, env in (("2 cores", {}), ("1 core", {"ABREAST_WORKERS": "1"})):
            t0 = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env}, check=True).stdout
            results[label] = (time.perf_counter() - t0, json.loads(out)["rows"][0])
        for label, (t, row) in results.items():
            print(f"{label}: {args.runs} runs x 500 executions in {t:.2f}s   p50 {row['p50']:.1f}s p90 {row['p90']:.1f}s p95 {row['p95']:.1f}s max {row['max']:.1f}s")
        assert results["2 cores"][1] == results["1 core"][1], "the answer must not depend on the number of workers"
        print(f"same percentiles on 1 and 2 cores; speed-up {results['1 core'][0] / results['2 cores'][0]:.2f}x")


if __name__ == "__main__":
    main()
