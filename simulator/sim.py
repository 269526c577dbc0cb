"""The virtual clock: drives the engine's core with sampled durations.

A heap of `(time, order, ...)` where `order` is the seq of the attempt's
`execution.started` event: completions due at the same instant are applied in the
order the executions started (SPEC §2, "Simultaneous events"), then one decision pass
runs. Retry delays come from the core (`next_wakeup`). Times are rounded to 1e-9 s so
that 0.1 + 0.2 and 0.3 are the same instant.

The simulator produces exactly the events a real run would (with `wall` null).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from dataclasses import dataclass

from engine.core import SERVER, Core
from engine.events import Event
from engine.plan import Plan
from engine.report import Report
from simulator.durations import DurationModel

INJECTED = "injected failure (simulation)"


@dataclass
class Outcome:
    """What `simulate` answers: the report of one run plus the sequential baseline."""

    report: Report
    sequential_makespan: float | None = None

    @property
    def makespan(self) -> float:
        assert self.report.makespan is not None
        return self.report.makespan

    @property
    def savings(self) -> float | None:
        if self.sequential_makespan is None:
            return None
        return _round(self.sequential_makespan - self.makespan)


def _round(t: float) -> float:
    return round(t, 9)


def run(
    plan: Plan,
    seed: int = 0,
    deployment: str = "simulation",
    sink: Callable[[list[Event]], None] | None = None,
    model: DurationModel | None = None,
) -> Report:
    """Simulate one deployment of `plan`; return its report. `sink` sees every batch of
    events as it is produced (to write them out, for instance)."""
    model = model or DurationModel(plan, seed)
    model.check()
    core = Core(plan, deployment)
    report = Report()
    add = report.add
    steps = plan.steps
    target_names = core.target_names
    exec_targets = core.exec_targets
    durations = model.duration
    fails = model.fails
    timeouts = [s.timeout for s in steps]
    heap: list[tuple[float, int, int, int, int, str]] = []
    push = heapq.heappush
    pop = heapq.heappop

    def emit(events: list[Event]) -> None:
        for ev in events:
            add(ev)
        if sink is not None and events:
            sink(events)

    def schedule(now: float) -> None:
        for order, s, k, attempt in core.take_starts():
            step = steps[s]
            t = exec_targets[s][k]
            target = target_names[t] if t != SERVER else None
            d = durations(step, target, attempt)
            limit = timeouts[s]
            if limit is not None and d > limit:
                push(heap, (_round(now + limit), order, s, k, attempt, "timed_out"))
            elif fails(step, target, attempt):
                push(heap, (_round(now + d), order, s, k, attempt, "failed"))
            else:
                push(heap, (_round(now + d), order, s, k, attempt, "succeeded"))

    emit(core.begin(0.0))
    schedule(0.0)
    finish = core.finish
    while not core.done:
        wake = core.next_wakeup()
        if heap:
            now = heap[0][0]
            if wake is not None and wake < now:
                now = wake
        elif wake is not None:
            now = wake
        else:  # cannot happen while the core's invariants hold
            raise RuntimeError("simulation stalled: nothing running and nothing due")
        while heap and heap[0][0] == now:
            _, _, s, k, attempt, outcome = pop(heap)
            if outcome == "succeeded":
                emit(finish(s, k, attempt, "succeeded", now, 0))
            elif outcome == "failed":
                emit(finish(s, k, attempt, "failed", now, 1, INJECTED))
            else:
                emit(finish(s, k, attempt, "timed_out", now, None, f"attempt ran longer than the timeout of {timeouts[s]:g}s"))
        emit(core.advance(now))
        schedule(now)
    return report


def simulate(plan: Plan, seed: int = 0, sink: Callable[[list[Event]], None] | None = None, sequential: bool = True) -> Outcome:
    """Simulate `plan`, and (unless `sequential=False`) the same process run strictly
    one step after another, with the same sampled durations."""
    model = DurationModel(plan, seed)
    report = run(plan, seed, sink=sink, model=model)
    seq = None
    if sequential:
        seq_plan = plan.sequential()
        seq = run(seq_plan, seed, model=DurationModel(seq_plan, seed)).makespan
    return Outcome(report=report, sequential_makespan=seq)
