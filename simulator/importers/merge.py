"""Several recorded runs of one process -> one scenario whose durations are what really
happened: `{dist: empirical, samples: [...]}` per step and per target (SPEC §5).

The latest run (by its recorded start) gives the process — steps, targets, windows,
dependencies; every run gives samples: each attempt's recorded duration, for its step
and its target. A step's `default` holds all of the step's samples, for a target that
has none of its own. A sample is drawn like every other duration (keyed on seed, step,
target and attempt), so `whatif --runs N` shows the spread of the record and compares
settings on the same draws. Injected failures (`fails`) of the latest run are dropped:
the samples include failed attempts' durations, and the note says how many failed.
"""

from __future__ import annotations

from typing import Any

from simulator.importers.record import FAILED, NS, Imported, duration_text, strip_comments


def merge(runs: list[Imported]) -> tuple[dict, list[str]]:
    """One scenario from `runs` (see the module docstring), and notes."""
    notes: list[str] = []
    latest = max(runs, key=lambda r: r.record.start)
    scenario = strip_comments(latest.scenario)
    samples: dict[tuple[str, str | None], list[float]] = {}
    failures: dict[str, int] = {}
    attempts: dict[str, int] = {}
    for run in runs:
        for step in run.record.steps:
            for e in step.executions:
                for a in e.attempts:
                    samples.setdefault((step.name, e.target), []).append(duration_text((a.end - a.start) / NS))
                    attempts[step.name] = attempts.get(step.name, 0) + 1
                    if a.outcome in FAILED:
                        failures[step.name] = failures.get(step.name, 0) + 1
    names = {s["name"] for s in scenario["steps"]}
    declared = {t["name"] for t in scenario.get("targets", [])}
    for run in runs:
        gone = [s.name for s in run.record.steps if s.name not in names]
        if gone:
            notes.append(f"{run.record.id}: steps {', '.join(map(repr, gone))} are not in the latest run's process: their samples are left out")
    for step in scenario["steps"]:
        name = step["name"]
        step.pop("fails", None)
        mine = {t: v for (s, t), v in samples.items() if s == name}
        if not mine:
            notes.append(f"step {name!r} never ran in these {len(runs)} runs: its duration stays {step.get('duration')!r}")
            continue
        everything = sorted(v for vs in mine.values() for v in vs)
        if not step.get("roles"):
            step["duration"] = _empirical(everything)
        else:
            duration: dict[str, Any] = {t: _empirical(vs) for t, vs in mine.items() if t in declared}
            duration["default"] = _empirical(everything)
            step["duration"] = duration
        if failures.get(name):
            notes.append(f"step {name!r}: {failures[name]} of {attempts[name]} recorded attempts failed (their durations are among the samples)")
    return scenario, notes


def _empirical(values: list[float]) -> dict:
    return {"dist": "empirical", "samples": sorted(values)}
