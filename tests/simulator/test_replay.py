"""Replay (SPEC §5): a recorded deployment re-simulated with the durations and outcomes
it recorded, under its own policy and under others."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from engine.core import Core
from engine.plan import plan_to_builtins
from engine.scenario import ScenarioError, load, resolve
from simulator.durations import MissingDuration
from simulator.importers.record import Attempt, Execution, Record, StepRecord, log_of
from simulator.replay import HistoryError, disagreements, raw_of, read_history, replay
from simulator.sim import simulate
from simulator.whatif import parse_axes
from tests.engine.test_properties import SETTINGS, scenarios
from tests.helpers import plan_of

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = sorted((ROOT / "scenarios").glob("*.yaml"))
GRID = ["max_parallel_steps=1,3", "target_isolation=exclusive,shared", "max_parallel_targets=1,10"]


def simulated(plan, seed: int = 0) -> list:
    events: list = []
    simulate(plan, seed=seed, sink=events.extend, sequential=False)
    return events


SEED = """
    name: seed example
    targets: [{name: web-01, roles: [web]}, {name: web-02, roles: [web]}]
    steps:
      - {name: deploy app, roles: [web], duration: 10}
      - {name: warm cache, start: with-previous, roles: [web], duration: 5}
"""


def test_the_seed_example_replays_and_answers_what_the_bypass_would_have_saved():
    result = replay(simulated(plan_of(SEED)), parse_axes(["target_isolation=exclusive,shared"]))
    assert (result.recorded_makespan, result.recorded_outcome, result.makespan, result.fidelity) == (15.0, "succeeded", 15.0, 0.0)
    assert [(r.settings, r.makespan, r.savings_vs_recorded, r.estimated) for r in result.rows] == [
        ({"target_isolation": "exclusive"}, 15.0, 0.0, []),
        ({"target_isolation": "shared"}, 10.0, 5.0, []),
    ]
    assert result.disagreements == [] and result.estimated == []


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_a_simulated_history_replays_to_its_makespan_and_every_setting_equals_simulate(path):
    plan = load(path)
    events = simulated(plan, seed=4)
    result = replay(events, parse_axes(GRID))
    assert abs(result.makespan - result.recorded_makespan) <= 1e-9
    assert result.disagreements == [] and result.estimated == []
    for row in result.rows:
        sets = [f"{k}={v}" for k, v in row.settings.items()]
        expected = simulate(load(path, sets), seed=4, sequential=False)
        if not row.estimated:
            assert abs(row.makespan - expected.makespan) <= 1e-9, row.settings
            assert row.outcome == expected.report.outcome


# Found by hypothesis: an attempt of exactly its timeout (s4: 3 s, timeout 3) came back
# from the log as 3.0000000000000004 s and timed out in the replay.
TIMEOUT_EXACTLY = {
    "policy": {"max_parallel_steps": 1, "max_parallel_targets": 1, "target_isolation": "exclusive", "fail_fast": False},
    "resources": {"db": 1},
    "targets": [{"name": "t0", "roles": ["a"]}, {"name": "t1", "roles": ["a"]}, {"name": "t2", "roles": ["a"]}],
    "steps": [
        {"name": "s0", "duration": 0, "condition": "success"},
        {"name": "s1", "duration": 0, "condition": "success"},
        {"name": "s2", "duration": {"dist": "uniform", "low": 1, "high": 9}, "isolation": "exclusive",
         "condition": "success", "fails": {"*": 1}, "retries": 0, "retry_delay": 0},
        {"name": "s3", "duration": 0, "condition": "success"},
        {"name": "s4", "roles": ["a"], "duration": 3, "condition": "failure", "timeout": 3},
    ],
}


@SETTINGS
@given(scenarios(distributions=True), st.integers(0, 2**16), st.sampled_from(GRID))
@example(TIMEOUT_EXACTLY, 0, "max_parallel_steps=1,3")
def test_random_histories_replay_exactly_and_like_simulate_under_another_setting(raw, seed, grid):
    plan = resolve(raw)
    events = simulated(plan, seed)
    result = replay(events, parse_axes([grid]))
    assert abs(result.makespan - result.recorded_makespan) <= 1e-9
    assert result.outcome == result.recorded_outcome
    assert result.disagreements == []
    key, _, values = grid.partition("=")
    for row, value in zip(result.rows, values.split(","), strict=True):
        if row.estimated:
            continue
        other = resolve(yaml.safe_load(yaml.safe_dump(raw)) | {"policy": {**raw["policy"], key: yaml.safe_load(value)}})
        expected = simulate(other, seed=seed, sequential=False)
        assert abs(row.makespan - expected.makespan) <= 1e-9, (row.settings, row.makespan, expected.makespan)
        assert row.outcome == expected.report.outcome


@SETTINGS
@given(scenarios(distributions=True))
def test_the_plan_written_back_as_a_scenario_resolves_to_the_same_plan(raw):
    plan = resolve(raw)
    assert msgspec.structs.replace(resolve(raw_of(plan)), source=None) == msgspec.structs.replace(plan, source=None)


FAILING = """
    targets: [{name: t1, roles: [x]}, {name: t2, roles: [x]}]
    steps:
      - {name: A, roles: [x], window: 1, duration: {t1: 4, t2: 6}, fails: {t1: 1}}
      - {name: B, duration: 7}
"""


def test_an_execution_without_a_record_takes_the_median_of_its_steps_attempts():
    # Recorded: A on t1 0-4 fails, the step stops, t2 never runs, B is skipped.
    events = simulated(plan_of(FAILING))
    result = replay(events, parse_axes(["steps.A.window=2"]))
    assert (result.recorded_makespan, result.recorded_outcome) == (4.0, "failed")
    (row,) = result.rows
    # Window 2: t2 starts at 0 beside t1 and takes the median of A's recorded attempts (4).
    assert (row.makespan, row.outcome) == (4.0, "failed")
    assert [(e.step, e.target, e.attempt, e.seconds) for e in row.estimated] == [("A", "t2", 1, 4.0)]
    assert "median of the step's 1 recorded attempts" in row.estimated[0].basis


def test_a_step_that_never_ran_takes_the_scenarios_duration():
    events = simulated(plan_of(FAILING))
    (row,) = replay(events, parse_axes(["steps.B.condition=always"])).rows
    assert row.makespan == 11.0
    assert [(e.step, e.target, e.seconds) for e in row.estimated] == [("B", None, 7.0)]
    assert row.estimated[0].basis.startswith("the scenario's duration")


def test_without_a_duration_anywhere_replay_says_which_step_needs_one():
    events = simulated(plan_of(FAILING))
    plan = dict(events[0].plan)
    plan["steps"] = [dict(s, duration=None) if s["name"] == "B" else s for s in plan["steps"]]
    events[0] = msgspec.structs.replace(events[0], plan=plan)
    assert replay(events).makespan == 4.0  # nothing needs B's duration under the recorded policy
    with pytest.raises(MissingDuration, match="step 'B' has no duration"):
        replay(events, parse_axes(["steps.B.condition=always"]))


def test_an_attempt_beyond_the_recorded_ones_succeeds_as_long_as_the_last_one():
    plan = plan_of("steps: [{name: A, duration: 3, fails: {server: 2}, retries: 1}]")
    events = simulated(plan)
    result = replay(events, parse_axes(["steps.A.retries=2"]))
    assert (result.makespan, result.outcome) == (6.0, "failed")
    (row,) = result.rows
    assert (row.makespan, row.outcome, row.savings_vs_recorded) == (9.0, "succeeded", -3.0)
    assert [(e.attempt, e.seconds, e.basis) for e in row.estimated] == [(3, 3.0, "as long as its last recorded attempt")]


def test_an_interrupted_attempt_is_replayed_as_it_was_recorded():
    # A real run that crashed at 2 s and was resumed: attempt 1 `interrupted`, attempt 2 ran 2-7.
    plan = plan_of("steps: [{name: A, duration: 5}]")
    core = Core(plan, "d")
    events = core.begin(0.0)
    core.take_starts()
    events += core.interrupt_running(2.0) + core.advance(2.0)
    (_, s, k, attempt), = core.take_starts()
    events += core.finish(s, k, attempt, "succeeded", 7.0) + core.advance(7.0)
    result = replay(events)
    assert (result.recorded_makespan, result.makespan, result.outcome) == (7.0, 7.0, "succeeded")


async def test_a_cancelled_deployment_is_cancelled_at_the_same_instant_in_the_replay(autojump_clock):
    import trio

    from engine.runtime import Runtime
    from engine.store import MemoryStore
    from tests.engine.test_runtime import ROOT, dry

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
    result = replay(store.read("d"), parse_axes(["steps.long.window=2"]))
    assert (result.recorded_makespan, result.recorded_outcome, result.makespan, result.outcome) == (30.0, "cancelled", 30.0, "cancelled")
    # Both targets at once: t2 has no record and takes the step's median (30 s); the
    # operator still cancels at 30 s, and `never` never starts.
    (row,) = result.rows
    assert (row.makespan, row.outcome) == (30.0, "cancelled")
    assert [(e.target, e.seconds) for e in row.estimated] == [("t2", 30.0)]


def test_a_history_that_has_not_finished_cannot_be_replayed():
    events = simulated(plan_of(SEED))[:-3]
    with pytest.raises(HistoryError, match="has not finished"):
        read_history(events)
    with pytest.raises(HistoryError, match="deployment.started"):
        read_history(events[1:])


def test_a_bad_setting_is_a_scenario_error():
    with pytest.raises(ScenarioError, match="no step named 'nope'"):
        replay(simulated(plan_of(SEED)), parse_axes(["steps.nope.window=1"]))


# --- a record that breaks the rules -------------------------------------------------------

S = 1_000_000_000


def foreign(plan_text: str, steps: list[StepRecord], end: float) -> list:
    plan = plan_of(plan_text)
    record = Record(tool="test", id="t", start=0, end=int(end * S), outcome="succeeded", steps=steps)
    return log_of(record, plan_to_builtins(plan), plan.name)


def step(name: str, start: float, end: float, *executions: tuple[str | None, float, float]) -> StepRecord:
    return StepRecord(
        name=name,
        outcome="succeeded",
        start=int(start * S),
        end=int(end * S),
        executions=[Execution(t, [Attempt(int(a * S), int(b * S), "succeeded")]) for t, a, b in executions],
    )


def test_two_exclusive_executions_on_one_target_at_once_are_named():
    events = foreign(
        SEED,
        [step("deploy app", 0, 10, ("web-01", 0, 10), ("web-02", 0, 10)), step("warm cache", 0, 5, ("web-01", 0, 5), ("web-02", 0, 5))],
        10,
    )
    result = replay(events)
    assert result.recorded_makespan == 10.0 and result.makespan == 15.0 and result.fidelity == 0.5
    assert result.disagreements == [
        "at 0s: 'warm cache' started on web-01 while 'deploy app' held it (exclusive lock)",
        "at 0s: 'warm cache' started on web-02 while 'deploy app' held it (exclusive lock)",
    ]


def test_windows_step_slots_prerequisites_and_resources_are_checked():
    text = """
        policy: {max_parallel_steps: 1}
        resources: {db: 1}
        targets: [{name: t1, roles: [x]}, {name: t2, roles: [x]}]
        steps:
          - {name: A, roles: [x], window: 1, duration: 1}
          - {name: B, uses: {db: 1}, duration: 1}
          - {name: C, depends_on: [], uses: {db: 1}, duration: 1}
    """
    events = foreign(
        text,
        [step("A", 0, 2, ("t1", 0, 2), ("t2", 1, 2)), step("B", 1, 3, (None, 1, 3)), step("C", 2, 3, (None, 2, 3))],
        3,
    )
    found, more = disagreements(plan_of(text), events)
    assert found == [
        "at 1s: 'B' started before its prerequisite 'A' ended",
        "at 1s: 'B' made 2 steps active at once; max_parallel_steps is 1",
        "at 1s: 'A' ran 2 executions at once; its window is 1",
        "at 2s: 'C' made 2 steps active at once; max_parallel_steps is 1",
        "at 2s: 'C' took db beyond its capacity of 1",
    ]
    assert more == 0
    assert disagreements(plan_of(text), events, limit=2) == (found[:2], 3)


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
async def test_a_dry_run_replays_to_its_recorded_makespan(autojump_clock, path):
    from tests.engine.test_runtime import run_dry

    plan = load(path)
    _, report, events = await run_dry(plan, seed=2, speed=7)
    result = replay(events, parse_axes(["max_parallel_steps=2"]))
    assert abs(result.makespan - report.makespan) <= 1e-9
    assert result.disagreements == [] and result.estimated == []
    (row,) = result.rows
    assert abs(row.makespan - simulate(load(path, ["max_parallel_steps=2"]), seed=2, sequential=False).makespan) <= 1e-9
