"""Benchmark: `abreast simulate` against a SimPy model of the same deployment.

B blocks of 4 parallel steps, each step on its own quarter of T targets, window 10,
10 steps at once, durations uniform 5-15 s (keyed draws, the same on both sides).
Both run as whole processes, side by side, at each size; we report wall time, peak
memory (max RSS) and check that both find the same makespan.

    python tests/bench/bench_simulate.py                 # 10k, 100k, 1M executions
    python tests/bench/bench_simulate.py --sizes 10000   # just one size

The SimPy model answers the same question as `abreast simulate --format json` (makespan,
sequential makespan, every step and execution); it is also timed computing the makespan
alone, the least any model must do.
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

ROOT = Path(__file__).resolve().parents[2]
TARGETS = 1000  # 250 per quarter: 250 executions per step


def scenario(blocks: int, targets: int) -> dict:
    steps = []
    for b in range(blocks):
        for q in range(4):
            step = {"name": f"b{b:04d}-q{q}", "roles": [f"q{q}"], "duration": {"dist": "uniform", "low": 5, "high": 15}}
            if q:
                step["start"] = "with-previous"
            steps.append(step)
    return {
        "name": f"bench {blocks} blocks x 4 steps x {targets} targets",
        "policy": {"max_parallel_steps": 10, "max_parallel_targets": 10},
        "targets": [{"name": f"t{i:06d}", "roles": [f"q{i % 4}"]} for i in range(targets)],
        "steps": steps,
    }


def timed(cmd: list[str], stdout_path: str) -> tuple[float, int, int]:
    """Run a whole process; return (seconds, max RSS in MiB, exit status)."""
    with open(stdout_path, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
    return elapsed, usage.ru_maxrss // 1024, os.waitstatus_to_exitcode(status)


def build(py: str) -> str:
    """`abreast --version` of the abreast measured: it says whether the compiled modules run."""
    return subprocess.run([py, "-m", "abreast", "--version"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = ap.parse_args()
    py = sys.executable
    print(build(py), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            blocks = size // TARGETS
            path = Path(tmp) / f"bench-{size}.json"
            path.write_text(json.dumps(scenario(blocks, TARGETS)))
            model = [py, str(ROOT / "tests/bench/simpy_model.py"), "--blocks", str(blocks), "--targets", str(TARGETS)]
            a_t, a_mem, a_rc = timed([py, "-m", "abreast", "simulate", str(path), "--format", "json"], f"{tmp}/a.json")
            s_t, s_mem, s_rc = timed(model, f"{tmp}/s.json")
            m_t, _, m_rc = timed([*model, "--makespan-only"], f"{tmp}/m.json")
            assert a_rc == s_rc == m_rc == 0, (a_rc, s_rc, m_rc)
            a = json.loads(Path(f"{tmp}/a.json").read_bytes())
            s = json.loads(Path(f"{tmp}/s.json").read_bytes())
            m = json.loads(Path(f"{tmp}/m.json").read_bytes())
            assert len(a["executions"]) == len(s["executions"]) == size, (len(a["executions"]), size)
            same = (
                abs(a["makespan"] - s["makespan"]) < 1e-6
                and abs(a["makespan"] - m["makespan"]) < 1e-6
                and abs(a["sequential_makespan"] - s["sequential_makespan"]) < 1e-6
            )
            rows.append((size, a["makespan"], a["sequential_makespan"], same, a_t, s_t, m_t, a_mem, s_mem))
            print(
                f"{size:>9,} executions  makespan {a['makespan']:.3f} (simpy {s['makespan']:.3f}) "
                f"sequential {a['sequential_makespan']:.3f} (simpy {s['sequential_makespan']:.3f}) {'same' if same else 'DIFFERENT'}\n"
                f"          abreast {a_t:.2f}s  simpy same answer {s_t:.2f}s ({s_t / a_t:.1f}x)  "
                f"simpy makespan only {m_t:.2f}s ({m_t / a_t:.1f}x)  max RSS abreast {a_mem} MiB, simpy {s_mem} MiB",
                flush=True,
            )
            if not same:
                sys.exit("the makespans differ")
    if len(rows) > 1:
        print(f"growth: abreast {rows[-1][4] / rows[-2][4]:.1f}x from {rows[-2][0]:,} to {rows[-1][0]:,} executions")
    print("\n| executions | makespan | sequential | abreast | SimPy, same answer | ratio | SimPy, makespan only | ratio | abreast max RSS |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, am, sq, _, a_t, s_t, m_t, a_mem, _ in rows:
        print(f"| {size:,} | {am:,.3f} s | {sq:,.3f} s | {a_t:.2f} s | {s_t:.2f} s | {s_t / a_t:.1f}x | {m_t:.2f} s | {m_t / a_t:.1f}x | {a_mem} MiB |")


if __name__ == "__main__":
    main()
