"""Replay (SPEC §5): a recorded deployment re-simulated under the rules, with the
durations and outcomes it recorded.

Pure: a history's events in, answers out. The history carries its plan (in
`deployment.started`) and, per execution, how long each attempt took and how it ended.
`replay` drives the one core through the simulator's clock (`simulator.sim.run`) with
a `Recorded` duration model (`simulator.durations`): attempt n of an execution takes
exactly as long as it did and ends as it did; what the record does not have is
estimated and listed. Under the recorded policy that gives the replayed makespan and
its `fidelity` (|replayed − recorded| / recorded: how well the rules and the recorded
durations explain what happened); with `--set` grids (the keys, parsing and order of
`whatif`, from `simulator.whatif`) it answers what the same deployment would have taken
under other settings.

A history made by an importer may break the rules (two exclusive executions on one
target at once): it happened, so it is replayed all the same, and `disagreements`
says where the record and the rules part.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from engine.core import Core
from engine.events import (
    DeploymentStarted,
    Event,
    ExecutionFinished,
    ExecutionStarted,
    StepFinished,
    StepSkipped,
    StepStarted,
)
from engine.plan import Fixed, PerTarget, Plan, Single, Step, plan_from_builtins
from engine.report import Report
from engine.scenario import STEP_FIELDS
from simulator.durations import Attempts, Recorded
from simulator.sim import run
from simulator.whatif import Axis, combinations, plan_for

MAX_DISAGREEMENTS = 20  # listed one by one; the rest are counted


class HistoryError(ValueError):
    """A log that cannot be replayed (no plan, not finished); says why."""


class Estimated(msgspec.Struct):
    """An attempt the record has no duration for, and what it was given instead."""

    step: str
    target: str | None
    attempt: int
    seconds: float
    basis: str


class ReplayRow(msgspec.Struct):
    settings: dict[str, Any]
    makespan: float
    outcome: str
    savings_vs_recorded: float  # recorded - replayed: > 0 is faster than what happened
    estimated: list[Estimated]


class Replay(msgspec.Struct):
    deployment: str | None
    scenario: str | None
    recorded_makespan: float
    recorded_outcome: str
    makespan: float  # the recorded policy, replayed
    outcome: str
    fidelity: float | None  # |makespan - recorded| / recorded (0 when both are 0, None when only the record is)
    estimated: list[Estimated]
    disagreements: list[str]
    disagreements_not_listed: int
    rows: list[ReplayRow]


class History(msgspec.Struct):
    """What a replay needs from a log."""

    deployment: str
    scenario: str | None
    plan: Plan
    recorded_makespan: float
    recorded_outcome: str
    attempts: Attempts
    seed: int
    cancelled_at: float | None = None  # a cancelled deployment: when it was cancelled


def read_history(events: Sequence[Event], name: str = "history") -> History:
    """Fold a log into what replay needs (raises `HistoryError`)."""
    if not events or not isinstance(events[0], DeploymentStarted):
        raise HistoryError(f"{name}: does not start with deployment.started")
    first = events[0]
    try:
        plan = plan_from_builtins(first.plan)
    except msgspec.ValidationError as e:
        raise HistoryError(f"{name}: the plan in deployment.started is not valid: {e}") from None
    report = Report.of(events)
    if report.outcome is None or report.makespan is None:
        raise HistoryError(f"{name}: the deployment has not finished (no deployment.finished): resume it, then replay")
    attempts: Attempts = {}
    for row in report.rows:
        if row.end is None or row.outcome is None:
            raise HistoryError(f"{name}: {row.step!r} on {row.target or 'the server'} attempt {row.attempt} never finished")
        # Times are kept to 1e-9 s: so is a duration (or 1 s - 1e-16 would pass a 1 s timeout).
        attempts.setdefault(row.step, {}).setdefault(row.target, []).append((round(row.end - row.start, 9), row.outcome))
    seed = first.options.get("seed", 0) if isinstance(first.options, dict) else 0
    cancelled_at = None
    if report.outcome == "cancelled":
        # The first sign of it: a step ended cancelled that never started, or an attempt
        # ended cancelled; else the end of the record.
        signs = [row.end for row in report.rows if row.outcome == "cancelled" and row.end is not None]
        signs += [step.end for step in report.steps.values() if step.outcome == "cancelled" and step.start is None and step.end is not None]
        cancelled_at = min(signs, default=report.makespan)
    return History(
        deployment=first.deployment,
        scenario=first.scenario,
        plan=plan,
        recorded_makespan=report.makespan,
        recorded_outcome=report.outcome,
        attempts=attempts,
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else 0,
        cancelled_at=cancelled_at,
    )


def replay_plan(plan: Plan, attempts: Attempts, seed: int = 0, cancelled_at: float | None = None) -> tuple[float, str, list[Estimated]]:
    """Replay the recorded attempts under `plan`: makespan, outcome, estimated attempts.
    A deployment that was cancelled is cancelled at the same instant."""
    model = Recorded(plan, attempts, seed)
    report = run(plan, seed, model=model, report=False, cancel_at=cancelled_at)
    assert report.makespan is not None and report.outcome is not None
    estimated = [Estimated(step, target, attempt, seconds, basis) for step, target, attempt, seconds, basis in model.estimated]
    return report.makespan, report.outcome, estimated


def replay(events: Sequence[Event], axes: Sequence[Axis] = (), name: str = "history") -> Replay:
    """Replay a history under its recorded policy and under every combination of `axes`
    (raises `HistoryError`, `ScenarioError` for a bad setting, `MissingDuration` when an
    execution without a record has no duration in the scenario either)."""
    history = read_history(events, name)
    plan = history.plan
    makespan, outcome, estimated = replay_plan(plan, history.attempts, history.seed, history.cancelled_at)
    recorded = history.recorded_makespan
    fidelity = abs(makespan - recorded) / recorded if recorded > 0 else (0.0 if makespan == 0 else None)
    rows = []
    if axes:
        raw = raw_of(plan)
        for settings in combinations(axes):
            row_plan = plan_for(raw, settings, name)
            row_makespan, row_outcome, row_estimated = replay_plan(row_plan, history.attempts, history.seed, history.cancelled_at)
            rows.append(ReplayRow(settings, row_makespan, row_outcome, round(recorded - row_makespan, 9), row_estimated))
    found, more = disagreements(plan, events)
    return Replay(
        deployment=history.deployment,
        scenario=history.scenario,
        recorded_makespan=recorded,
        recorded_outcome=history.recorded_outcome,
        makespan=makespan,
        outcome=outcome,
        fidelity=fidelity,
        estimated=estimated,
        disagreements=found,
        disagreements_not_listed=more,
        rows=rows,
    )


# --- the plan back as scenario data, so that --set applies exactly as in whatif ------


def _duration_raw(d: Single | PerTarget) -> Any:
    if isinstance(d, Fixed):
        return d.seconds
    if isinstance(d, PerTarget):
        out: dict[str, Any] = {k: _duration_raw(v) for k, v in d.by_target.items()}
        if d.default is not None:
            out["default"] = _duration_raw(d.default)
        return out
    return msgspec.to_builtins(d)  # {"dist": "lognormal", "median": ..., ...}


_STEP_DEFAULTS = Step(name="")


def raw_of(plan: Plan) -> dict:
    """Scenario-file data that resolves to `plan` (its policy written out explicitly).
    Targets keep their names and roles only: how a target is reached does not matter
    to a replay."""
    raw: dict[str, Any] = {
        "policy": msgspec.to_builtins(plan.policy),
        "variables": dict(plan.variables),
        "resources": dict(plan.resources),
        "targets": [{"name": t.name, "roles": list(t.roles)} for t in plan.targets],
        "steps": [],
    }
    if plan.name is not None:
        raw["name"] = plan.name
    for step in plan.steps:
        out: dict[str, Any] = {"name": step.name}
        for field in STEP_FIELDS:
            if field == "name" or not hasattr(step, field):
                continue
            value = getattr(step, field)
            if value == getattr(_STEP_DEFAULTS, field):
                continue
            if field == "duration":
                value = _duration_raw(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = dict(value)
            out[field] = value
        raw["steps"].append(out)
    return raw


# --- where the record and the rules disagree -------------------------------------------


def _at(t: float) -> str:
    return f"{round(t, 9):g}s"


def disagreements(plan: Plan, events: Iterable[Event], limit: int = MAX_DISAGREEMENTS) -> tuple[list[str], int]:
    """Walk the recorded log in order and name every move SPEC §2 would not have made:
    a step started before a prerequisite ended or beyond `max_parallel_steps`, an
    execution beyond its step's window, on a target another execution held against it,
    or with resources over their capacity. Returns (the first `limit`, how many more)."""
    core = Core(plan, "check")  # its prerequisite tables, nothing else
    index = core.step_index
    steps = plan.steps
    windows = [plan.window_of(s) for s in steps]
    exclusive = [plan.isolation_of(s) == "exclusive" for s in steps]
    holders: dict[str, list[str]] = {}  # target -> steps running on it (exclusive ones marked)
    writers: dict[str, int] = {}
    running = [0] * len(steps)
    used: dict[str, int] = {}
    terminal = [False] * len(steps)
    is_active = [False] * len(steps)
    active = 0
    found: list[str] = []
    count = 0

    def say(message: str) -> None:
        nonlocal count
        count += 1
        if len(found) < limit:
            found.append(message)

    def check_prerequisites(s: int, at: float, verb: str) -> None:
        explicit = core.prereq_explicit[s]
        prefix = core.prereq_prefix[s]
        needed = explicit if explicit is not None else range(prefix if prefix is not None else 0)
        waiting = [steps[p].name for p in needed if not terminal[p]]
        if waiting:
            say(f"at {_at(at)}: {steps[s].name!r} {verb} before its prerequisite{'s' if len(waiting) > 1 else ''} "
                f"{', '.join(repr(w) for w in waiting[:3])}{' …' if len(waiting) > 3 else ''} ended")

    for ev in events:
        t = type(ev)
        if t is ExecutionStarted:
            s = index.get(ev.step)
            if s is None:
                continue
            step = steps[s]
            running[s] += 1
            if running[s] > windows[s]:
                say(f"at {_at(ev.at)}: {step.name!r} ran {running[s]} executions at once; its window is {windows[s]}")
            target = ev.target
            if target is not None:
                held = holders.setdefault(target, [])
                busy = writers.get(target, 0)
                if held and (exclusive[s] or busy):
                    others = ", ".join(repr(h) for h in dict.fromkeys(held))
                    say(f"at {_at(ev.at)}: {step.name!r} started on {target} while {others} held it "
                        f"({'exclusive' if exclusive[s] or busy else 'shared'} lock)")
                held.append(step.name)
                if exclusive[s]:
                    writers[target] = busy + 1
            for r, u in step.uses.items():
                used[r] = used.get(r, 0) + u
                if used[r] > plan.resources.get(r, 0):
                    say(f"at {_at(ev.at)}: {step.name!r} took {r} beyond its capacity of {plan.resources.get(r, 0)}")
        elif t is ExecutionFinished:
            s = index.get(ev.step)
            if s is None:
                continue
            step = steps[s]
            running[s] -= 1
            target = ev.target
            if target is not None and target in holders:
                held = holders[target]
                if step.name in held:
                    held.remove(step.name)
                if exclusive[s]:
                    writers[target] = max(0, writers.get(target, 0) - 1)
            for r, u in step.uses.items():
                used[r] = used.get(r, 0) - u
        elif t is StepStarted:
            s = index.get(ev.step)
            if s is None:
                continue
            check_prerequisites(s, ev.at, "started")
            is_active[s] = True
            active += 1
            if active > plan.policy.max_parallel_steps:
                say(f"at {_at(ev.at)}: {ev.step!r} made {active} steps active at once; max_parallel_steps is "
                    f"{plan.policy.max_parallel_steps}")
        elif t is StepSkipped:
            s = index.get(ev.step)
            if s is None:
                continue
            check_prerequisites(s, ev.at, "was skipped")
            terminal[s] = True
        elif t is StepFinished:
            s = index.get(ev.step)
            if s is None:
                continue
            if is_active[s]:
                is_active[s] = False
                active -= 1
            terminal[s] = True
    return found, max(0, count - len(found))

