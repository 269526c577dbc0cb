"""Properties of the core over random scenarios, checked at every instant of the log.

Random plans are driven through the simulator; a checker replays the event log in seq
order and asserts the invariants of SPEC §2 after every event.
"""

from __future__ import annotations

from collections import defaultdict

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core import Core
from engine.events import (
    DeploymentFinished,
    DeploymentStarted,
    ExecutionFinished,
    ExecutionStarted,
    StepFinished,
    StepSkipped,
    StepStarted,
)
from engine.plan import Plan
from engine.scenario import resolve
from simulator.sim import simulate

ROLES = ["a", "b", "c"]
TERMINAL_EVENTS = (StepFinished, StepSkipped)


@st.composite
def scenarios(draw, distributions: bool = False) -> dict:
    n_targets = draw(st.integers(1, 5))
    targets = [
        {"name": f"t{i}", "roles": draw(st.lists(st.sampled_from(ROLES), min_size=1, max_size=2, unique=True))}
        for i in range(n_targets)
    ]
    resources = draw(st.dictionaries(st.sampled_from(["db", "lb"]), st.integers(1, 3), max_size=2))
    n_steps = draw(st.integers(1, 7))
    steps = []
    for i in range(n_steps):
        step: dict = {"name": f"s{i}"}
        roles = draw(st.lists(st.sampled_from([*ROLES, "none"]), max_size=2, unique=True))
        if roles:
            step["roles"] = roles
        if distributions and draw(st.booleans()):
            step["duration"] = {"dist": "uniform", "low": 1, "high": 9}
        else:
            step["duration"] = draw(st.integers(0, 6))
        if i > 0:
            mode = draw(st.sampled_from(["after", "with", "deps"]))
            if mode == "with":
                step["start"] = "with-previous"
            elif mode == "deps":
                step["depends_on"] = draw(st.lists(st.sampled_from([f"s{j}" for j in range(i)]), max_size=2, unique=True))
        if draw(st.booleans()):
            step["window"] = draw(st.integers(1, 3))
        if draw(st.booleans()):
            step["isolation"] = draw(st.sampled_from(["exclusive", "shared"]))
        if resources and draw(st.booleans()):
            name = draw(st.sampled_from(sorted(resources)))
            step["uses"] = {name: draw(st.integers(1, resources[name]))}
        step["condition"] = draw(st.sampled_from(["success", "success", "failure", "always"]))
        if draw(st.integers(0, 3)) == 0:
            step["fails"] = {"*": draw(st.integers(1, 2))}
            step["retries"] = draw(st.integers(0, 2))
            step["retry_delay"] = draw(st.integers(0, 3))
        if draw(st.integers(0, 5)) == 0:
            step["timeout"] = draw(st.integers(1, 4))
        steps.append(step)
    policy = {
        "max_parallel_steps": draw(st.integers(1, 4)),
        "max_parallel_targets": draw(st.integers(1, 4)),
        "target_isolation": draw(st.sampled_from(["exclusive", "shared"])),
        "fail_fast": draw(st.booleans()),
    }
    return {"policy": policy, "resources": resources, "targets": targets, "steps": steps}


def run_events(plan: Plan, seed: int = 0) -> list:
    events: list = []
    simulate(plan, seed=seed, sink=events.extend, sequential=False)
    return events


def prerequisites(plan: Plan) -> list[set[str]]:
    core = Core(plan, "x")
    out = []
    for i in range(len(plan.steps)):
        if core.prereq_explicit[i] is not None:
            out.append({plan.steps[j].name for j in core.prereq_explicit[i]})
        else:
            out.append({plan.steps[j].name for j in range(core.prereq_prefix[i])})
    return out


def check_log(plan: Plan, events: list) -> None:
    """Replay the log and assert SPEC §2's invariants after every event."""
    policy = plan.policy
    by_name = {s.name: s for s in plan.steps}
    prereqs = dict(zip([s.name for s in plan.steps], prerequisites(plan), strict=True))
    active: set[str] = set()
    terminal: set[str] = set()
    running: dict[str, int] = defaultdict(int)
    writers: dict[str, int] = defaultdict(int)
    readers: dict[str, int] = defaultdict(int)
    used: dict[str, int] = defaultdict(int)
    failures: dict[tuple, int] = defaultdict(int)
    error = False
    assert isinstance(events[0], DeploymentStarted)
    assert isinstance(events[-1], DeploymentFinished)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    last_at = 0.0
    for ev in events:
        assert ev.at >= last_at, "time never goes back"
        last_at = ev.at
        if isinstance(ev, StepStarted | StepSkipped):
            assert ev.step not in active and ev.step not in terminal
            assert prereqs[ev.step] <= terminal, f"{ev.step} activated before its prerequisites ended"
            cond = by_name[ev.step].condition
            should_run = cond == "always" or (cond == "success") != error
            assert isinstance(ev, StepStarted) == should_run, f"condition {cond} with error={error}"
            if isinstance(ev, StepStarted):
                active.add(ev.step)
                assert len(active) <= policy.max_parallel_steps
            else:
                terminal.add(ev.step)
        elif isinstance(ev, ExecutionStarted):
            step = by_name[ev.step]
            assert ev.step in active
            running[ev.step] += 1
            assert running[ev.step] <= plan.window_of(step), "window exceeded"
            if ev.target is not None:
                if plan.isolation_of(step) == "exclusive":
                    writers[ev.target] += 1
                else:
                    readers[ev.target] += 1
                assert writers[ev.target] <= 1
                assert writers[ev.target] == 0 or readers[ev.target] == 0, "exclusive holder not alone"
            for r, u in step.uses.items():
                used[r] += u
                assert used[r] <= plan.resources[r], f"resource {r} over capacity"
        elif isinstance(ev, ExecutionFinished):
            step = by_name[ev.step]
            running[ev.step] -= 1
            if ev.target is not None:
                if plan.isolation_of(step) == "exclusive":
                    writers[ev.target] -= 1
                else:
                    readers[ev.target] -= 1
            for r, u in step.uses.items():
                used[r] -= u
            if ev.outcome in ("failed", "timed_out"):
                failures[(ev.step, ev.target)] += 1
                if failures[(ev.step, ev.target)] > step.retries:
                    error = True
        elif isinstance(ev, StepFinished):
            assert ev.step in active
            assert running[ev.step] == 0, "a step ends only when its executions have"
            active.discard(ev.step)
            terminal.add(ev.step)
        elif isinstance(ev, DeploymentFinished):
            assert terminal == set(by_name), "every step is terminal at the end"
            assert ev.outcome == ("failed" if error else "succeeded")


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(scenarios())
def test_every_instant_of_a_simulated_log_respects_the_rules(raw):
    plan = resolve(raw)
    check_log(plan, run_events(plan))


@SETTINGS
@given(scenarios(distributions=True), st.integers(0, 2**32))
def test_the_same_input_gives_the_same_events(raw, seed):
    plan = resolve(raw)
    first = [msgspec.json.encode(e) for e in run_events(plan, seed)]
    second = [msgspec.json.encode(e) for e in run_events(plan, seed)]
    assert first == second


@SETTINGS
@given(scenarios(distributions=True), st.integers(0, 2**32), st.integers(1, 4), st.sampled_from(["exclusive", "shared"]))
def test_sampled_durations_do_not_change_with_the_policy(raw, seed, steps_at_once, isolation):
    # Common random numbers: an attempt lasts as long under any policy.
    def lengths(plan: Plan) -> dict:
        out = {}
        started = {}
        for ev in run_events(plan, seed):
            if isinstance(ev, ExecutionStarted):
                started[(ev.step, ev.target, ev.attempt)] = ev.at
            elif isinstance(ev, ExecutionFinished):
                key = (ev.step, ev.target, ev.attempt)
                out[key] = (ev.at - started[key], ev.outcome)
        return out

    plan = resolve(raw)
    other = resolve(
        {**raw, "policy": {**raw["policy"], "max_parallel_steps": steps_at_once, "target_isolation": isolation, "fail_fast": False}}
    )
    a, b = lengths(plan), lengths(other)
    for key in a.keys() & b.keys():
        # Same draw, same outcome; times are kept to 1e-9 s, so a length may differ by that.
        assert a[key][1] == b[key][1], key
        assert abs(a[key][0] - b[key][0]) <= 2e-9, key


@SETTINGS
@given(scenarios())
def test_folding_the_log_rebuilds_the_state_the_core_reached(raw):
    plan = resolve(raw)
    live = Core(plan, "d")
    events = live.begin(0.0)
    # Drive the live core by hand (every execution succeeds after 1 s) ...
    now = 0.0
    while not live.done:
        starts = live.take_starts()
        now += 1
        for _, s, k, attempt in sorted(starts):
            events += live.finish(s, k, attempt, "succeeded", now)
        events += live.advance(now)
    # ... then fold its log into a fresh core: the same state, field by field.
    replayed = Core(plan, "d").fold(events)
    for field in ("seq", "done", "outcome", "error", "step_state", "exec_state", "attempts", "writer", "readers", "free"):
        assert getattr(replayed, field) == getattr(live, field), field
