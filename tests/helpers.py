"""Small helpers shared by the tests: build plans from YAML text, simulate, tabulate,
and tell whether a process still runs."""

from __future__ import annotations

import textwrap

import yaml

from engine.report import Report
from engine.scenario import apply_overrides, resolve
from engine.plan import Plan
from simulator.sim import Outcome, simulate


def plan_of(text: str, *sets: str) -> Plan:
    raw = yaml.safe_load(textwrap.dedent(text))
    if sets:
        raw = apply_overrides(raw, list(sets))
    return resolve(raw, file="test.yaml")


def sim(text: str, *sets: str, seed: int = 0) -> Outcome:
    return simulate(plan_of(text, *sets), seed=seed)


def runs(report: Report) -> list[tuple[str, str | None, int, float, float, str]]:
    """Every attempt as (step, target, attempt, start, end, outcome), in start order."""
    return [(e.step, e.target, e.attempt, e.start, e.end, e.outcome) for e in report.executions()]


def steps(report: Report) -> dict[str, tuple[str | None, float | None, float | None]]:
    """step name -> (outcome, start, end)."""
    return {s.name: (s.outcome, s.start, s.end) for s in report.steps.values()}


def alive(pid: int) -> bool:
    """The process runs: it exists and is not a zombie (a zombie is dead for our purpose;
    an orphan's may wait a while for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
