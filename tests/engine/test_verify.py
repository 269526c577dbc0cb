"""Checking a recorded log against the rules (engine/verify.py): every log the
simulator or the runtime writes passes, and a log that parts from the rules anywhere
is refused at the first event where it does."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import trio

from tests.engine.test_runtime_resume import dead_owner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core import Core
from engine.events import DeploymentFinished, ExecutionFinished, ExecutionStarted, StepFinished, StepStarted
from engine.runtime import Runtime
from engine.scenario import load, resolve
from engine.store import MemoryStore
from engine.verify import LogError, verify
from simulator.sim import run
from tests.engine.test_properties import scenarios
from tests.engine.test_runtime import dry, run_dry
from tests.helpers import plan_of

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = sorted(p.name for p in (ROOT / "scenarios").glob("*.yaml"))

FARM = """
    targets: [{name: web-01, roles: [web]}, {name: web-02, roles: [web]}]
    steps:
      - {name: push, roles: [web], duration: 10}
      - {name: upgrade, roles: [web], duration: 5, retries: 1, retry_delay: 4, fails: {web-02: 1}}
      - {name: notify, duration: 1}
"""


def simulated(plan) -> list:
    events: list = []
    run(plan, 0, sink=events.extend)
    return events


def renumbered(events: list) -> list:
    return [msgspec.structs.replace(e, seq=n) for n, e in enumerate(events, 1)]


def refused(events: list, plan) -> LogError:
    with pytest.raises(LogError) as e:
        verify(events, plan)
    return e.value


@pytest.mark.parametrize("name", BUNDLED)
def test_every_simulated_bundled_scenario_passes(name):
    plan = load(ROOT / "scenarios" / name)
    core = verify(simulated(plan), plan)
    assert core.done


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(distributions=True))
def test_every_simulated_random_scenario_passes(raw):
    plan = resolve(raw)
    assert verify(simulated(plan), plan).done


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(scenarios())
def test_every_dry_run_log_of_the_runtime_passes(raw):
    plan = resolve(raw)

    async def main() -> list:
        return (await run_dry(plan))[2]

    events = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert verify(events, plan).done


async def test_a_cancelled_runtime_log_passes(autojump_clock):
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
    assert events[-1].outcome == "cancelled"
    assert verify(events, plan).outcome == "cancelled"


async def test_a_resumed_log_with_interrupted_attempts_passes(autojump_clock):
    plan = plan_of(FARM)
    store = MemoryStore()
    first = Runtime(Core(plan, "d"), store, dry(plan), ROOT, wall_clock=lambda: None)
    with trio.move_on_after(12):  # the orchestrator "dies" while upgrade runs
        await first.run()
    crashed = store.read("d")
    assert not isinstance(crashed[-1], DeploymentFinished)
    verify(crashed, plan)  # an unfinished log is a log too
    store._owners["d"] = dead_owner()  # the first orchestrator is gone: its lease may be taken over
    core = Core(plan, "d").fold(crashed)
    await Runtime(core, store, dry(plan), ROOT, wall_clock=lambda: None, resume_at=crashed[-1].at + 3).run()
    events = store.read("d")
    assert any(isinstance(e, ExecutionFinished) and e.outcome == "interrupted" for e in events)
    assert verify(events, plan).outcome == "succeeded"


def test_a_step_started_twice_is_refused_where_it_happens():
    plan = plan_of(FARM)
    events = simulated(plan)
    i = next(i for i, e in enumerate(events) if isinstance(e, StepStarted) and e.step == "upgrade")
    bad = renumbered(events[: i + 1] + [events[i]] + events[i + 1 :])
    e = refused(bad, plan)
    assert e.index == i + 1 and "step.started of 'upgrade'" in e.message and "already active" in e.message


def test_time_going_backwards_is_refused():
    plan = plan_of(FARM)
    events = simulated(plan)
    i = next(i for i, e in enumerate(events) if isinstance(e, ExecutionFinished) and e.attempt == 2)
    bad = list(events)
    bad[i] = msgspec.structs.replace(bad[i], at=bad[i - 1].at - 0.5)
    e = refused(bad, plan)
    assert e.index == i and "time goes backwards" in e.message
    bad[i] = msgspec.structs.replace(bad[i], at=float("nan"))
    assert "expected a finite time" in refused(bad, plan).message


def test_a_deployment_outcome_that_contradicts_its_steps_is_refused():
    plan = plan_of(FARM)
    events = simulated(plan)
    assert events[-1].outcome == "succeeded"
    bad = events[:-1] + [msgspec.structs.replace(events[-1], outcome="failed")]
    e = refused(bad, plan)
    assert e.index == len(events) - 1 and "make it succeeded" in e.message


def test_a_step_outcome_that_contradicts_its_executions_is_refused():
    plan = plan_of(FARM)
    events = simulated(plan)
    i = next(i for i, e in enumerate(events) if isinstance(e, StepFinished) and e.step == "push")
    bad = list(events)
    bad[i] = msgspec.structs.replace(bad[i], outcome="failed")
    assert refused(bad, plan).index == i


def test_a_retry_before_its_delay_ran_out_is_refused():
    plan = plan_of(FARM)
    events = simulated(plan)
    # upgrade on web-02 fails at 15 and may run again at 19 (retry_delay 4), not at 16.
    i = next(i for i, e in enumerate(events) if isinstance(e, ExecutionStarted) and e.attempt == 2)
    assert events[i].at == 19
    bad = list(events)
    bad[i] = msgspec.structs.replace(bad[i], at=16.0)
    assert refused(bad, plan).index == i


def test_gaps_in_seq_an_unknown_step_and_events_after_the_end_are_refused():
    plan = plan_of(FARM)
    events = simulated(plan)
    gap = events[:3] + events[4:]
    assert "seq 5 where 4 was expected" in refused(gap, plan).message
    stranger = list(events)
    stranger[3] = msgspec.structs.replace(stranger[3], step="nope")
    assert refused(stranger, plan).index == 3
    after = events + [msgspec.structs.replace(events[1], seq=len(events) + 1, at=events[-1].at)]
    assert "after the deployment had finished" in refused(after, plan).message


def test_an_execution_that_finishes_without_starting_is_refused():
    plan = plan_of(FARM)
    events = simulated(plan)
    i = next(i for i, e in enumerate(events) if isinstance(e, ExecutionFinished))
    bad = renumbered(events[:i] + [msgspec.structs.replace(events[i], attempt=2)] + events[i + 1 :])
    e = refused(bad, plan)
    assert e.index == i and "not running" in e.message


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.data())
def test_dropping_any_decision_is_refused(raw, data):
    # (Dropping the last event leaves the log of a deployment that has not finished yet:
    # a log too, the one a crash leaves.)
    plan = resolve(raw)
    events = simulated(plan)
    decisions = [i for i, e in enumerate(events[:-1]) if i > 0 and not isinstance(e, ExecutionFinished)]
    i = data.draw(st.sampled_from(decisions))
    with pytest.raises(LogError):
        verify(renumbered(events[:i] + events[i + 1 :]), plan)
