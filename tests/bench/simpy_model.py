"""A SimPy model of the benchmark deployment, written independently of abreast's core.

The deployment: B blocks of 4 parallel steps; step q of every block runs on its own
quarter of the T targets (role q), in target order. The rules it exercises, modelled
the SimPy way:

- at most 10 steps at once: one `Resource(capacity=10)` of step slots;
- at most 10 executions of a step at once: a `Resource(capacity=10)` per step (FIFO,
  requested in target order);
- one step at a time per target (the exclusive lock): a `Resource(capacity=1)` per
  target, taken inside the window;
- the block barrier: block b+1 starts when every step of block b has ended.

Durations come from the same keyed sampler abreast uses (uniform 5-15 s), so both see
exactly the same durations. Like `abreast simulate --format json`, it answers with the
makespan, the sequential makespan (every step after the previous one), the savings,
each step's start and end, and every execution's start and end.

    python tests/bench/simpy_model.py --blocks 10 --targets 1000 [--makespan-only]

`--makespan-only` drops the sequential run and the per-execution records: the least a
SimPy model can do for the makespan alone; the benchmark reports it too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec
import simpy

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from simulator.durations import uniform  # noqa: E402

LOW, HIGH = 5.0, 15.0


def simulate(blocks: int, n_targets: int, seed: int, sequential: bool, record: bool) -> dict:
    targets = [f"t{i:06d}" for i in range(n_targets)]
    quarters = [[t for i, t in enumerate(targets) if i % 4 == q] for q in range(4)]
    env = simpy.Environment()
    step_slots = simpy.Resource(env, capacity=10)
    locks = {t: simpy.Resource(env, capacity=1) for t in targets}
    executions: list[dict] = []
    steps: list[dict] = []

    def execution(step, target, window, d):
        with window.request() as place:
            yield place
            with locks[target].request() as lock:
                yield lock
                start = env.now
                yield env.timeout(d)
                if record:
                    executions.append({"step": step, "target": target, "attempt": 1, "start": start, "end": env.now, "outcome": "succeeded"})

    def step(name, quarter):
        with step_slots.request() as slot:
            yield slot
            start = env.now
            window = simpy.Resource(env, capacity=10)
            procs = [
                env.process(execution(name, t, window, LOW + uniform(seed, name, t, 1, "duration") * (HIGH - LOW)))
                for t in quarter
            ]
            yield env.all_of(procs)
            if record:
                steps.append({"name": name, "outcome": "succeeded", "start": start, "end": env.now})

    def deployment():
        for b in range(blocks):
            names = [f"b{b:04d}-q{q}" for q in range(4)]
            if sequential:
                for q, name in enumerate(names):
                    yield env.process(step(name, quarters[q]))
            else:
                yield env.all_of([env.process(step(name, quarters[q])) for q, name in enumerate(names)])

    env.process(deployment())
    env.run()
    return {"makespan": env.now, "steps": steps, "executions": executions, "count": blocks * n_targets}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, required=True)
    ap.add_argument("--targets", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--makespan-only", action="store_true")
    args = ap.parse_args()
    full = not args.makespan_only
    result = simulate(args.blocks, args.targets, args.seed, sequential=False, record=full)
    doc: dict = {"makespan": result["makespan"], "executions_count": result["count"]}
    if full:
        seq = simulate(args.blocks, args.targets, args.seed, sequential=True, record=False)["makespan"]
        doc.update(
            sequential_makespan=seq,
            savings=seq - result["makespan"],
            outcome="succeeded",
            steps=sorted(result["steps"], key=lambda s: s["name"]),
            executions=result["executions"],
        )
    sys.stdout.buffer.write(msgspec.json.encode(doc) + b"\n")


if __name__ == "__main__":
    main()
