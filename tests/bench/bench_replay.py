"""Benchmark: import and replay a 100,000-execution Octopus deployment.

The deployment of bench_simulate.py's shape — B blocks of 4 parallel steps, each step on
its own quarter of 1,000 targets, window 10, 10 steps at once — with fixed per-target
durations in milliseconds (5-15 s), simulated, then written the way Octopus records it
(task details with one node per step and target, the process, the machines: about
70 MB of JSON at 100k). Timed as whole processes:

    abreast import octopus --task ... --process ... --machines ... -o S.yaml --events E.jsonl
    abreast replay E.jsonl --format json
    abreast replay E.jsonl --set max_parallel_steps=4 --format json

and checked: the replay finds the recorded makespan (fidelity 0). The requirement:
import and replay together under 10 s.

    python tests/bench/bench_replay.py                    # 100k executions
    python tests/bench/bench_replay.py --sizes 10000 100000
    python tests/bench/bench_replay.py --python /path/to/venv/bin/python   # another install of abreast

abreast runs as `python -P -m abreast`: the install of that interpreter (compiled or
pure, as `abreast --version` says), not the sources beside this script.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_simulate import TARGETS, timed  # noqa: E402


def scenario(blocks: int, targets: int, seed: int = 1) -> dict:
    rng = random.Random(seed)
    steps = []
    for b in range(blocks):
        for q in range(4):
            mine = [f"t{i:06d}" for i in range(q, targets, 4)]
            step = {"name": f"b{b:04d}-q{q}", "roles": [f"q{q}"], "duration": {t: rng.randint(5000, 15000) / 1000 for t in mine}}
            if q:
                step["start"] = "with-previous"
            steps.append(step)
    return {
        "name": f"bench {blocks} blocks x 4 steps x {targets} targets",
        "targets": [{"name": f"t{i:06d}", "roles": [f"q{i % 4}"]} for i in range(targets)],
        "steps": steps,
    }


def write_octopus(raw: dict, folder: Path) -> None:
    from engine.scenario import resolve
    from simulator.sim import simulate
    from tests.importers.render import octopus

    plan = resolve(raw)
    events: list = []
    simulate(plan, sink=events.extend, sequential=False)
    for name, text in octopus(plan, events).items():
        (folder / name).write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--python", default=sys.executable, help="the interpreter whose abreast is measured")
    args = ap.parse_args()
    py = args.python
    print(subprocess.run([py, "-P", "-m", "abreast", "--version"], capture_output=True, text=True, check=True).stdout.strip(), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            folder = Path(tmp) / str(size)
            folder.mkdir()
            write_octopus(scenario(size // TARGETS, TARGETS), folder)
            megabytes = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
            imp = [py, "-P", "-m", "abreast", "import", "octopus", "--task", str(folder / "task.json"), "--process", str(folder / "process.json"),
                   "--machines", str(folder / "machines.json"), "-o", str(folder / "s.yaml"), "--events", str(folder / "e.jsonl")]
            i_t, i_mem, i_rc = timed(imp, f"{tmp}/i.txt")
            r_t, r_mem, r_rc = timed([py, "-P", "-m", "abreast", "replay", str(folder / "e.jsonl"), "--format", "json"], f"{tmp}/r.json")
            s_t, _, s_rc = timed([py, "-P", "-m", "abreast", "replay", str(folder / "e.jsonl"), "--set", "max_parallel_steps=4", "--format", "json"], f"{tmp}/s.json")
            assert i_rc == r_rc == s_rc == 0, (i_rc, r_rc, s_rc)
            r = json.loads(Path(f"{tmp}/r.json").read_bytes())
            s = json.loads(Path(f"{tmp}/s.json").read_bytes())
            assert r["fidelity"] == 0.0 and not r["disagreements"], (r["fidelity"], r["disagreements"][:3])
            rows.append((size, megabytes, r["recorded_makespan"], s["rows"][0]["makespan"], i_t, r_t, s_t, max(i_mem, r_mem)))
            print(
                f"{size:>9,} executions ({megabytes:.0f} MB of Octopus JSON)  recorded {r['recorded_makespan']:.3f} s, replayed "
                f"{r['makespan']:.3f} s, with max_parallel_steps=4 {s['rows'][0]['makespan']:.3f} s\n"
                f"          import {i_t:.2f}s + replay {r_t:.2f}s = {i_t + r_t:.2f}s; replay with one --set {s_t:.2f}s; max RSS {max(i_mem, r_mem)} MiB",
                flush=True,
            )
    print("\n| executions | Octopus JSON | recorded makespan | import | replay | import + replay | replay + one --set row | max RSS |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, mb, recorded, _, i_t, r_t, s_t, mem in rows:
        print(f"| {size:,} | {mb:.0f} MB | {recorded:,.3f} s | {i_t:.2f} s | {r_t:.2f} s | {i_t + r_t:.2f} s | {s_t:.2f} s | {mem} MiB |")


if __name__ == "__main__":
    main()
