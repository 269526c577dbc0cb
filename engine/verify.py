"""Checking a recorded log against the rules: fold it through the core and compare.

A log records two kinds of events. Some are *inputs* to the rules: the deployment
started, an attempt ended (its outcome, exit code and time are facts the core cannot
know), the deployment was cancelled. Every other event is a *decision*: which step
starts or is skipped, which execution starts, when a step or the deployment ends and
with which outcome. The core makes those decisions from the inputs alone.

`verify` drives a fresh core with the log's inputs, in the log's order and at the log's
times, and requires every decision in the log to be exactly what the core emits at that
point (type, seq, step, target, attempt, outcome and time). A step started twice, a
retry before its delay ran out, an execution started while its target was locked, a
`deployment.finished` whose outcome contradicts its steps, a gap in seq, or time going
backwards: each is the first event where the log and the rules part, and is reported
with its index.

Why replaying the passes lazily is exact: the core numbers its events in the order it
emits them, so the state before a recorded decision is the fold of every event before
it, and a pass is a function of that state and the time. A pass that decided nothing
left no trace in the log, and changed nothing but to make due retries pending again,
which the next pass does just the same. A cancellation may leave no event of its own
(nothing was pending): it shows as the first execution that ends `cancelled`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from engine.core import Core, IllegalMove
from engine.events import (
    AnyEvent,
    DeploymentFinished,
    DeploymentResumed,
    DeploymentStarted,
    Event,
    ExecutionFinished,
    ExecutionStarted,
    StepFinished,
    StepSkipped,
    StepStarted,
)
from engine.plan import Plan


class LogError(ValueError):
    """The log parts from the rules at `events[index]`."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index
        self.message = message


def describe(ev: Event) -> str:
    """One event for people: `execution.started of 'deploy' on web-02 (attempt 1) at 3s`."""
    tag = ev.__struct_config__.tag
    if isinstance(ev, ExecutionStarted | ExecutionFinished):
        where = ev.target if ev.target is not None else "the server"
        what = f"{tag} of {ev.step!r} on {where} (attempt {ev.attempt})"
        if isinstance(ev, ExecutionFinished):
            what += f" {ev.outcome}"
    elif isinstance(ev, StepStarted | StepSkipped):
        what = f"{tag} of {ev.step!r}"
    elif isinstance(ev, StepFinished):
        what = f"{tag} of {ev.step!r} {ev.outcome}"
    elif isinstance(ev, DeploymentFinished):
        what = f"{tag} {ev.outcome}"
    else:
        what = str(tag)
    return f"{what} at {_seconds(ev.at)} (seq {ev.seq})"


def _seconds(at: float) -> str:
    return (f"{at:.6f}".rstrip("0").rstrip(".") or "0") + "s" if abs(at) < 1e15 else f"{at:g}s"


def _decision(ev: Event) -> tuple:
    """What the core decides about an event (not the prose: reasons and errors)."""
    return (
        type(ev),
        ev.seq,
        ev.at,
        getattr(ev, "step", None),
        getattr(ev, "target", None),
        getattr(ev, "attempt", None),
        getattr(ev, "outcome", None),
    )


def verify(events: Sequence[AnyEvent], plan: Plan) -> Core:
    """Fold `events` (one deployment, `deployment.started` first) through a core of
    `plan` and compare (see the module docstring). Returns the folded core; raises
    `LogError` at the first event that breaks the rules."""
    if not events or not isinstance(events[0], DeploymentStarted):
        raise LogError(0, "expected deployment.started first")
    core = Core(plan, events[0].deployment)
    expected: deque[Event] = deque()
    last_at = 0.0
    for i, ev in enumerate(events):
        at = ev.at
        if not math.isfinite(at) or at < 0:
            raise LogError(i, f"{type(ev).__struct_config__.tag} at {at!r}: expected a finite time >= 0")  # type: ignore[attr-defined]
        if at < last_at:
            raise LogError(i, f"{describe(ev)}: time goes backwards (the event before was at {_seconds(last_at)})")
        last_at = at
        if ev.seq != i + 1:
            raise LogError(i, f"seq {ev.seq} where {i + 1} was expected (seq counts 1, 2, 3 … without gaps)")
        if ev.deployment != core.deployment:
            raise LogError(i, f"an event of deployment {ev.deployment!r} in the log of {core.deployment!r}")
        if i == 0:
            expected.extend(core.begin(at, ev.wall, dict(events[0].options))[1:])  # type: ignore[union-attr]
            continue
        if isinstance(ev, DeploymentStarted):
            raise LogError(i, "a second deployment.started")
        if isinstance(ev, DeploymentResumed):
            # Another orchestrator took the deployment over: a takeover decides nothing,
            # but it can only come between two batches, never inside one.
            if expected:
                raise LogError(i, f"deployment.resumed where the rules give {describe(expected[0])}")
            core.apply(ev)
            continue
        if not expected:
            if core.done:
                raise LogError(i, f"{describe(ev)} after the deployment had finished")
            try:
                expected.extend(_next(core, ev))
            except IllegalMove as e:
                raise LogError(i, f"{describe(ev)}: {e}") from None
        if not expected:
            raise LogError(i, f"{describe(ev)}, but the rules decide nothing then")
        want = expected.popleft()
        if _decision(want) != _decision(ev):
            raise LogError(i, f"{describe(ev)}{_why(core, ev, want)}, but the rules give {describe(want)}")
    return core


def _why(core: Core, ev: Event, want: Event) -> str:
    """What makes a recorded decision impossible, when it is plain (else nothing)."""
    from engine.core import PENDING, STEP_STATE_NAMES

    if isinstance(ev, StepStarted | StepSkipped):
        s = core.step_index.get(ev.step)
        if s is None:
            return f" (the plan has no step {ev.step!r})"
        if core.step_state[s] != PENDING and not (isinstance(want, StepStarted | StepSkipped) and want.step == ev.step):
            return f" (that step was already {STEP_STATE_NAMES[core.step_state[s]]})"
    if isinstance(ev, DeploymentFinished) and isinstance(want, DeploymentFinished) and ev.outcome != want.outcome:
        return f" (its steps and executions make it {want.outcome})"
    if type(ev) is type(want) and ev.seq == want.seq and ev.at != want.at:
        return " (at another time)"
    return ""


def _next(core: Core, ev: AnyEvent) -> list[Event]:
    """The core's events for the next input the log shows."""
    if isinstance(ev, ExecutionFinished):
        out: list[Event] = []
        if ev.outcome == "cancelled" and not core.cancelling:
            out = core.cancel(ev.at, ev.wall)  # the cancel that left no event of its own
            if out:
                return out  # they belonged before this event: the comparison says so
        s = core.step_index.get(ev.step)
        k = core.exec_by_target[s].get(ev.target) if s is not None else None
        if s is None or k is None:
            raise IllegalMove(f"step {ev.step!r} has no execution on {ev.target!r} in the plan")
        return core.finish(s, k, ev.attempt, ev.outcome, ev.at, ev.exit_code, ev.error, ev.wall)
    if not core.cancelling and (
        (isinstance(ev, StepFinished | DeploymentFinished) and ev.outcome == "cancelled")
    ):
        out = core.cancel(ev.at, ev.wall)
        if out:
            return out
    return core.advance(ev.at, ev.wall)
