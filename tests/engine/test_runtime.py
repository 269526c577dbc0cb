"""The trio runtime under pytest-trio's autojump_clock: exact virtual times, and the
same schedule as the simulator for the same scenario."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings

from adapters.dryrun import DryRunAdapter
from engine.adapter import AttemptResult, ExecutionRequest
from engine.core import Core
from engine.events import ExecutionFinished, ExecutionStarted
from engine.plan import Plan
from engine.report import Report
from engine.runtime import Runtime
from engine.scenario import load, resolve
from engine.store import MemoryStore
from simulator.durations import DurationModel
from simulator.sim import simulate
from tests.engine.test_properties import check_log, scenarios
from tests.helpers import plan_of, runs

ROOT = Path(__file__).resolve().parents[2]


def dry(plan: Plan, seed: int = 0, speed: float = 1.0):
    model = DurationModel(plan, seed)
    adapter = DryRunAdapter(model.duration, model.fails, speed)
    return lambda target: adapter


async def run_dry(plan: Plan, seed: int = 0, speed: float = 1.0) -> tuple[str, Report, list]:
    store = MemoryStore()
    runtime = Runtime(Core(plan, "d"), store, dry(plan, seed, speed), ROOT, wall_clock=lambda: None, time_scale=speed)
    outcome = await runtime.run()
    events = store.read("d")
    return outcome, Report.of(events), events


async def test_seed_example_in_virtual_time(autojump_clock):
    plan = plan_of("""
        targets: [{name: web-01, roles: [web]}, {name: web-02, roles: [web]}]
        steps:
          - {name: A, roles: [web], duration: 10}
          - {name: B, start: with-previous, roles: [web], duration: 5}
    """)
    outcome, report, _ = await run_dry(plan)
    assert outcome == "succeeded"
    assert runs(report) == [
        ("A", "web-01", 1, 0, 10, "succeeded"),
        ("A", "web-02", 1, 0, 10, "succeeded"),
        ("B", "web-01", 1, 10, 15, "succeeded"),
        ("B", "web-02", 1, 10, 15, "succeeded"),
    ]
    assert report.makespan == 15


async def test_retry_delay_timeout_and_failure_condition_in_virtual_time(autojump_clock):
    # A: fails at 4, retried after 3 s: 7-11 succeeds. T: 10 s of work, timeout 2:
    # timed out at 2 (attempt 1), at 4 (attempt 2); fails; rollback (failure) 11-12.
    plan = plan_of("""
        steps:
          - {name: A, duration: 4, fails: {server: 1}, retries: 1, retry_delay: 3}
          - {name: T, start: with-previous, duration: 10, timeout: 2, retries: 1}
          - {name: rollback, condition: failure, duration: 1}
    """)
    outcome, report, _ = await run_dry(plan)
    assert outcome == "failed"
    assert runs(report) == [
        ("A", None, 1, 0, 4, "failed"),
        ("T", None, 1, 0, 2, "timed_out"),
        ("T", None, 2, 2, 4, "timed_out"),
        ("A", None, 2, 7, 11, "succeeded"),
        ("rollback", None, 1, 11, 12, "succeeded"),
    ]


async def test_a_dry_run_at_speed_x_rehearses_on_a_clock_x_times_faster(autojump_clock):
    # 60 s + a failed 30 s attempt, a 15 s retry delay and a 30 s retry: 135 s of
    # deployment in 13.5 s of (virtual) real time at speed 10; the log reads in
    # deployment seconds, like the simulation.
    plan = plan_of("""
        steps:
          - {name: a, duration: 60}
          - {name: b, duration: 30, fails: {server: 1}, retries: 1, retry_delay: 15s, timeout: 30}
    """)
    t0 = trio.current_time()
    _, report, _ = await run_dry(plan, speed=10)
    assert trio.current_time() - t0 == pytest.approx(13.5)
    assert [(s, a, st, e, o) for s, _, a, st, e, o in runs(report)] == [
        ("a", 1, 0, 60, "succeeded"), ("b", 1, 60, 90, "failed"), ("b", 2, 105, 135, "succeeded")
    ]


def same_schedule(plan: Plan, seed: int, events: list) -> None:
    """The real runtime's log against the simulator's, for the same plan and seed."""
    simulated: list = []
    simulate(plan, seed=seed, sink=simulated.extend, sequential=False)
    key = lambda e: (type(e).__name__, getattr(e, "step", None), getattr(e, "target", None), getattr(e, "attempt", None), getattr(e, "outcome", None))  # noqa: E731
    assert [key(e) for e in events] == [key(e) for e in simulated]
    assert [e.at for e in events] == pytest.approx([e.at for e in simulated], abs=1e-6)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "scenarios").glob("*.yaml")))
async def test_bundled_scenarios_run_exactly_as_simulated(autojump_clock, name):
    plan = load(ROOT / "scenarios" / name)
    _, _, events = await run_dry(plan, seed=3)
    same_schedule(plan, 3, events)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(scenarios())
def test_random_scenarios_run_exactly_as_simulated(raw):
    plan = resolve(raw)

    async def main() -> list:
        return (await run_dry(plan))[2]

    events = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    check_log(plan, events)
    same_schedule(plan, 0, events)


class BoomOnA:
    """Raises for step `a`; anything else succeeds after 1 s."""

    name = "boom"

    async def run(self, request: ExecutionRequest, output) -> AttemptResult:  # noqa: ANN001
        if request.step.name == "a":
            raise RuntimeError("no route to host")
        await trio.sleep(1)
        return AttemptResult("succeeded", 0)


async def test_an_adapter_error_fails_the_attempt_not_the_deployment(autojump_clock):
    plan = plan_of("""
        steps:
          - {name: a, duration: 1}
          - {name: cleanup, condition: always, duration: 1}
    """)
    store = MemoryStore()
    outcome = await Runtime(Core(plan, "d"), store, lambda t: BoomOnA(), ROOT, wall_clock=lambda: None).run()
    finished = [e for e in store.read("d") if isinstance(e, ExecutionFinished)]
    assert outcome == "failed"
    assert [(e.step, e.outcome, e.error) for e in finished] == [
        ("a", "failed", "adapter error: RuntimeError: no route to host"),
        ("cleanup", "succeeded", None),
    ]
    # A real adapter's attempt lasts from the pass that decided it until it returns:
    # here 1 s, plus the runtime's 1e-9 s gathering windows in between.
    assert [e.at for e in finished] == pytest.approx([0, 1], abs=1e-8)


async def test_cancel_stops_running_executions_and_ends_the_log_cancelled(autojump_clock):
    plan = plan_of("""
        targets: [{name: t1, roles: [x]}, {name: t2, roles: [x]}]
        steps:
          - {name: long, roles: [x], duration: 100, window: 1}
          - {name: never, duration: 1}
    """)
    store = MemoryStore()
    runtime = Runtime(Core(plan, "d"), store, dry(plan), ROOT, wall_clock=lambda: None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.run)
        await trio.sleep(30)
        runtime.cancel()
    events = store.read("d")
    assert [(type(e).__name__, getattr(e, "step", None), getattr(e, "outcome", None), e.at) for e in events[-5:]] == [
        ("ExecutionStarted", "long", None, 0),
        ("StepFinished", "never", "cancelled", 30),
        ("ExecutionFinished", "long", "cancelled", 30),
        ("StepFinished", "long", "cancelled", 30),
        ("DeploymentFinished", None, "cancelled", 30),
    ]
    assert not any(isinstance(e, ExecutionStarted) and e.target == "t2" for e in events)


async def test_events_are_committed_before_the_execution_they_start_runs(autojump_clock):
    plan = plan_of("steps: [{name: a, duration: 1}, {name: b, duration: 1}]")
    store = MemoryStore()
    seen: list[int] = []

    class Peek:
        name = "peek"

        async def run(self, request: ExecutionRequest, output) -> AttemptResult:  # noqa: ANN001
            # By the time an attempt runs, its execution.started is in the store.
            stored = [e for e in store.read("d") if isinstance(e, ExecutionStarted) and e.step == request.step.name]
            seen.append(len(stored))
            await trio.sleep(1)
            return AttemptResult("succeeded", 0)

    await Runtime(Core(plan, "d"), store, lambda t: Peek(), ROOT, wall_clock=lambda: None).run()
    assert seen == [1, 1]
