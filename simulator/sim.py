"""The virtual clock: drives the engine's core with sampled durations.

A heap of `(time, order, ...)` where `order` is the seq of the attempt's
`execution.started` event: completions due at the same instant are applied in the
order the executions started (docs/rules.md §2, "Simultaneous events"), then one decision pass
runs. Retry delays come from the core (`next_wakeup`). Times are rounded to 1e-9 s so
that 0.1 + 0.2 and 0.3 are the same instant.

The simulator produces exactly the events a real run would (with `wall` null).
"""

from __future__ import annotations

import gc
import heapq
import os
import signal
from collections.abc import Callable

from dataclasses import dataclass

from engine._native import checkpoint
from engine.core import SERVER, Core
from engine.events import Event
from engine.plan import Plan, fan_out
from engine.report import Report
from simulator.durations import DurationModel

INJECTED = "injected failure (simulation)"
# The loop offers Python a chance to handle a signal (Ctrl-C) after about this many
# completions (or instants): compiled, it would otherwise never stop (engine/_native.py).
CHECKPOINT_EVERY = 1024
RECORDED = "as recorded (replay)"


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
    report: bool = True,
    cancel_at: float | None = None,
) -> Report:
    """Simulate one deployment of `plan`; return its report. `sink` sees every batch of
    events as it is produced (to write them out, for instance). With `report=False`
    only the outcome and makespan are kept (no rows): the sequential baseline needs no more.
    `cancel_at` cancels the deployment at that instant (a replay of a cancelled record):
    nothing new starts; what runs ends as the model says."""
    model = model or DurationModel(plan, seed)
    model.check()
    core = Core(plan, deployment)
    rep = Report()
    add = rep.extend if report else None
    target_names = core.target_names
    exec_targets = core.exec_targets
    samplers = [model.sampler(s) for s in plan.steps]
    injectors = [model.injector(s) for s in plan.steps]
    endings = [model.ending(s) for s in plan.steps]
    timeouts = [s.timeout for s in plan.steps]
    heap: list[tuple[float, int, int, int, int, str]] = []
    push = heapq.heappush
    take_starts = core.take_starts

    emit: Callable[[list[Event]], None]
    if sink is None:
        emit = add if add is not None else _ignore
    else:
        def emit(events: list[Event]) -> None:
            if add is not None:
                add(events)
            if events:
                sink(events)

    def schedule(now: float) -> None:
        for order, s, k, attempt in take_starts():
            t = exec_targets[s][k]
            target = target_names[t] if t != SERVER else None
            d = samplers[s](target, attempt)
            limit = timeouts[s]
            if limit is not None and d > limit:
                push(heap, (round(now + limit, 9), order, s, k, attempt, "timed_out"))
            else:
                ending = endings[s]
                if ending is not None:
                    outcome = ending(target, attempt)
                else:
                    inject = injectors[s]
                    outcome = "failed" if inject is not None and inject(target, attempt) else "succeeded"
                push(heap, (round(now + d, 9), order, s, k, attempt, outcome))

    # The loop allocates millions of short-lived objects and creates no cycles: the
    # cyclic collector would only rescan the growing report (about 10% of the time).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        _loop(core, heap, emit, schedule, timeouts, cancel_at)
    finally:
        if gc_was_enabled:
            gc.enable()
    if add is None:
        assert core.finished_event is not None
        rep.add(core.finished_event)  # deployment.finished: outcome and makespan
    return rep


def _ignore(events: list[Event]) -> None:
    pass


def _loop(core, heap, emit, schedule, timeouts, cancel_at) -> None:  # noqa: ANN001 - run()'s locals
    pop = heapq.heappop
    finish = core.finish
    advance = core.advance
    next_wakeup = core.next_wakeup
    emit(core.begin(0.0))
    schedule(0.0)
    countdown = CHECKPOINT_EVERY
    while not core.done:
        countdown -= 1
        if countdown <= 0:
            countdown = CHECKPOINT_EVERY
            checkpoint()
        wake = next_wakeup()
        if heap:
            now = heap[0][0]
            if wake is not None and wake < now:
                now = wake
        elif wake is not None:
            now = wake
        elif cancel_at is not None:
            now = cancel_at
        else:  # cannot happen while the core's invariants hold
            raise RuntimeError("simulation stalled: nothing running and nothing due")
        if cancel_at is not None and cancel_at < now:
            now = cancel_at
        while heap and heap[0][0] == now:
            _, _, s, k, attempt, outcome = pop(heap)
            countdown -= 1
            if outcome == "succeeded":
                emit(finish(s, k, attempt, "succeeded", now, 0))
            elif outcome == "failed":
                emit(finish(s, k, attempt, "failed", now, 1, INJECTED))
            elif outcome == "timed_out":
                emit(finish(s, k, attempt, "timed_out", now, None, f"attempt ran longer than the timeout of {timeouts[s]:g}s"))
            else:  # a recorded ending a simulation never injects (cancelled, interrupted)
                emit(finish(s, k, attempt, outcome, now, None, RECORDED))
        if cancel_at is not None and now == cancel_at:
            # The completions of this instant came first; the cancellation takes the pass.
            emit(core.cancel(now))
            cancel_at = None
        else:
            emit(advance(now))
        schedule(now)


def sequential_makespan(plan: Plan, seed: int = 0) -> float:
    """The makespan of `plan` run strictly one step after another (same durations)."""
    seq_plan = plan.sequential()
    result = run(seq_plan, seed, model=DurationModel(seq_plan, seed), report=False).makespan
    assert result is not None
    return result


# Above this many executions the sequential baseline is simulated in a forked child
# on the other core, beside the main run (a fork costs a few milliseconds).
PARALLEL_THRESHOLD = 20_000


def simulate(plan: Plan, seed: int = 0, sink: Callable[[list[Event]], None] | None = None, sequential: bool = True) -> Outcome:
    """Simulate `plan`, and (unless `sequential=False`) the same process run strictly
    one step after another, with the same sampled durations."""
    DurationModel(plan, seed).check()
    child = None
    if sequential and _can_fork() and _executions(plan) >= PARALLEL_THRESHOLD:
        child = _fork(lambda: sequential_makespan(plan, seed))
    try:
        report = run(plan, seed, sink=sink)
    except BaseException:  # Ctrl-C: the child's work is not wanted any more
        if child is not None:
            child[1]()
        raise
    seq = None
    if sequential:
        seq = child[0]() if child is not None else sequential_makespan(plan, seed)
    return Outcome(report=report, sequential_makespan=seq)


def _executions(plan: Plan) -> int:
    return sum(len(f) if s.roles else 1 for s, f in zip(plan.steps, fan_out(plan), strict=True))


def _can_fork() -> bool:
    return hasattr(os, "fork") and (os.cpu_count() or 1) > 1


def _fork(fn: Callable[[], float]) -> tuple[Callable[[], float], Callable[[], None]]:
    """Run `fn` in a forked child; return a function that waits for its result and one
    that stops the child instead."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: compute, write, leave without running the parent's cleanups
        code = 0
        try:
            os.close(r)
            os.write(w, repr(fn()).encode())
        except BaseException:  # noqa: BLE001 - reported to the parent as a failed child
            code = 1
        finally:
            os._exit(code)
    os.close(w)

    def wait() -> float:
        with os.fdopen(r, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0 or not data:
            raise RuntimeError("the sequential-baseline simulation failed in its child process")
        return float(data)

    def stop() -> None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)

    return wait, stop
