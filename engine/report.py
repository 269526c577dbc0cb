"""What happened, folded from the event log: makespan, steps and executions.

One report serves simulations and real runs alike, because both produce the same
events (SPEC §3). Feed events with `add` (or `Report.of(events)`), read the fields.
Executions are kept column-wise so a million of them stay small.
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


class ExecutionRow(msgspec.Struct):
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
        # Executions, one entry per attempt, column-wise.
        self.x_step: list[str] = []
        self.x_target: list[str | None] = []
        self.x_attempt: list[int] = []
        self.x_start: list[float] = []
        self.x_end: list[float | None] = []
        self.x_outcome: list[str | None] = []
        self._open: dict[tuple[str, str | None], int] = {}

    @classmethod
    def of(cls, events: Iterable[Event]) -> Report:
        r = cls()
        for ev in events:
            r.add(ev)
        return r

    def add(self, ev: Event) -> None:
        self.events += 1
        kind = type(ev)
        if kind is ExecutionStarted:
            self._open[(ev.step, ev.target)] = len(self.x_step)
            self.x_step.append(ev.step)
            self.x_target.append(ev.target)
            self.x_attempt.append(ev.attempt)
            self.x_start.append(ev.at)
            self.x_end.append(None)
            self.x_outcome.append(None)
        elif kind is ExecutionFinished:
            i = self._open.pop((ev.step, ev.target))
            self.x_end[i] = ev.at
            self.x_outcome[i] = ev.outcome
        elif kind is StepStarted:
            self.steps[ev.step] = StepRow(name=ev.step, start=ev.at)
        elif kind is StepFinished:
            row = self.steps.setdefault(ev.step, StepRow(name=ev.step))
            row.end = ev.at
            row.outcome = ev.outcome
        elif kind is StepSkipped:
            self.steps[ev.step] = StepRow(name=ev.step, outcome="skipped", reason=ev.reason)
        elif kind is DeploymentStarted:
            self.deployment = ev.deployment
            self.scenario = ev.scenario
            # Every step of the plan gets a row, in declaration order.
            for s in ev.plan.get("steps", []):
                self.steps.setdefault(s["name"], StepRow(name=s["name"]))
        elif kind is DeploymentFinished:
            self.outcome = ev.outcome
            self.makespan = ev.at

    def executions(self) -> list[ExecutionRow]:
        return [
            ExecutionRow(step=s, target=t, attempt=a, start=b, end=e, outcome=o)
            for s, t, a, b, e, o in zip(
                self.x_step, self.x_target, self.x_attempt, self.x_start, self.x_end, self.x_outcome, strict=True
            )
        ]

    @property
    def execution_count(self) -> int:
        return len(self.x_step)
