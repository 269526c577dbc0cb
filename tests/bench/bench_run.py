"""Benchmark: 5,000 no-op executions through `abreast run` against `xargs -P10`.

500 targets x 10 steps, `run: "true"`, window 10 (so at most 10 commands at once, as
with `xargs -P10`), every event committed to a fresh SQLite file and every attempt
keeping its record (adapters/record.py) in the default state folder. Both run as whole
processes, side by side, alternating, several rounds; we report each time, the ratio
of the medians, and the same for CPU time (user + system of the whole process tree),
which a busy shared machine disturbs less than wall time.

`--compare PATH` also runs the abreast found in PATH (another checkout, say the one
before a change) in every round, so that before and after meet the same machine.

    python tests/bench/bench_run.py [--rounds 3] [--targets 500] [--steps 10] [--compare PATH]
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
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


def timed(cmd: list[str] | str, cwd: Path, shell: bool = False, env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and everything it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, shell=shell, check=True, stdout=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--targets", type=int, default=500)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--compare", type=Path, help="another abreast checkout to run side by side (e.g. before a change)")
    args = ap.parse_args()
    n = args.targets * args.steps
    sides: dict[str, tuple[list[str], dict | None]] = {
        "abreast": ([sys.executable, "-m", "abreast"], None),
    }
    if args.compare is not None:
        env = dict(os.environ, PYTHONPATH=str(args.compare.resolve()))
        sides["compare"] = ([sys.executable, "-m", "abreast"], env)
    # abreast's modules compiled to bytecode first, as `pip install` does: in an editable
    # checkout on a machine with PYTHONDONTWRITEBYTECODE set (this one) every start
    # would compile them again (about 0.1 s).
    for root in (ROOT, *([args.compare] if args.compare is not None else [])):
        for package in ("abreast", "engine", "adapters", "simulator"):
            compileall.compile_dir(root / package, quiet=1)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in (*sides, "xargs")}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "bench.yaml").write_text(yaml.safe_dump(scenario(args.targets, args.steps)))
        for r in range(args.rounds):
            line = [f"round {r + 1}:"]
            for name, (cmd, env) in sides.items():
                db = folder / f"{name}-{r}.db"
                times[name].append(timed([*cmd, "run", "bench.yaml", "--db", str(db), "--quiet"], folder, env=env))
            times["xargs"].append(timed(f"seq {n} | xargs -P10 -I{{}} sh -c true", folder, shell=True))
            x_wall, x_cpu = times["xargs"][-1]
            for name, runs in times.items():
                wall, cpu = runs[-1]
                line.append(f"{name} {wall:.2f}s ({cpu:.2f}s CPU)" + (f" ratio {wall / x_wall:.2f}" if name != "xargs" else ""))
            print("   ".join(line), flush=True)
        from engine.store import SqliteStore

        store = SqliteStore(folder / "abreast-0.db")
        summary = store.deployments()[0]
        executions = sum(1 for e in store.read(summary.id) if type(e).__name__ == "ExecutionFinished")
        store.close()
    assert executions == n, (executions, n)
    xw = statistics.median(w for w, _ in times["xargs"])
    xc = statistics.median(c for _, c in times["xargs"])
    print(f"\n{n:,} executions, {summary.events:,} events committed (cores: {os.cpu_count()}); medians:")
    for name, runs in times.items():
        w, c = statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)
        ratios = "" if name == "xargs" else f"   ratio {w / xw:.2f} wall, {c / xc:.2f} CPU"
        print(f"  {name:8s} {w:6.2f}s wall {c:6.2f}s CPU{ratios}")


if __name__ == "__main__":
    main()
