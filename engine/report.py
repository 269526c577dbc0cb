"""What happened, folded from the event log: makespan, steps and executions.

One report serves simulations and real runs alike, because both produce the same
events (SPEC §3). Feed events with `add` / `extend` (or `Report.of(events)`), read the fields.
Executions are kept as plain rows so a million of them stay small and quick.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from engine.events import (
    DeploymentFinished,
    DeploymentStarted,
    Event,
    ExecutionFinished,
    ExecutionStarted,
    StepFinished,
    StepSkipped,
    StepStarted,
)


class StepRow(msgspec.Struct):
    name: str
    outcome: str | None = None  # succeeded, failed, cancelled, skipped; None while running
    start: float | None = None
    end: float | None = None
    reason: str | None = None
    decided: float | None = None  # when it was activated or skipped (start is null for a skip)


class ExecutionRow(msgspec.Struct, gc=False):
    """One attempt. `end` and `outcome` stay None while it runs."""

    step: str
    target: str | None
    attempt: int
    start: float
    end: float | None
    outcome: str | None


class Report:
    def __init__(self) -> None:
        self.deployment: str | None = None
        self.scenario: str | None = None
        self.outcome: str | None = None
        self.makespan: float | None = None
        self.steps: dict[str, StepRow] = {}
        self.events = 0
        # One row per attempt, in start order.
        self.rows: list[ExecutionRow] = []
        self._open: dict[tuple[str, str | None], ExecutionRow] = {}

    @classmethod
    def of(cls, events: Iterable[Event]) -> Report:
        r = cls()
        r.extend(events)
        return r

    def add(self, ev: Event) -> None:
        self.extend((ev,))

    def extend(self, events: Iterable[Event]) -> None:
        """Fold events in, in order. Executions are the bulk of any log: their two
        events are handled first, with everything they touch at hand."""
        rows = self.rows
        opened = self._open
        n = 0
        for ev in events:
            n += 1
            if type(ev) is ExecutionStarted:
                row = ExecutionRow(ev.step, ev.target, ev.attempt, ev.at, None, None)
                opened[(ev.step, ev.target)] = row
                rows.append(row)
            elif type(ev) is ExecutionFinished:
                row = opened.pop((ev.step, ev.target))
                row.end = ev.at
                row.outcome = ev.outcome
            else:
                self._add_other(ev)
        self.events += n

    def _add_other(self, ev: Event) -> None:
        if isinstance(ev, StepStarted):
            self.steps[ev.step] = StepRow(name=ev.step, start=ev.at, decided=ev.at)
        elif isinstance(ev, StepFinished):
            row = self.steps.setdefault(ev.step, StepRow(name=ev.step))
            row.end = ev.at
            row.outcome = ev.outcome
        elif isinstance(ev, StepSkipped):
            self.steps[ev.step] = StepRow(name=ev.step, outcome="skipped", reason=ev.reason, decided=ev.at)
        elif isinstance(ev, DeploymentStarted):
            self.deployment = ev.deployment
            self.scenario = ev.scenario
            # Every step of the plan gets a row, in declaration order.
            for s in ev.plan.get("steps", []):
                self.steps.setdefault(s["name"], StepRow(name=s["name"]))
        elif isinstance(ev, DeploymentFinished):
            self.outcome = ev.outcome
            self.makespan = ev.at

    def executions(self) -> list[ExecutionRow]:
        return self.rows

    @property
    def execution_count(self) -> int:
        return len(self.rows)
