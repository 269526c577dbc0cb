"""The core as a state machine: commands, the fold, illegal moves, cancel, resume."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from engine.core import Core, IllegalMove
from engine.events import ExecutionStarted
from tests.helpers import plan_of

ROOT = Path(__file__).resolve().parents[2]

SEED = """
    targets: [{name: web-01, roles: [web]}, {name: web-02, roles: [web]}]
    steps:
      - {name: A, roles: [web], run: ./a.sh}
      - {name: B, start: with-previous, roles: [web], run: ./b.sh}
      - {name: C, run: ./c.sh}
"""


def kinds(events):
    return [(type(e).__name__, getattr(e, "step", None), getattr(e, "target", None)) for e in events]


def test_begin_emits_the_started_event_and_the_first_pass():
    core = Core(plan_of(SEED), "d1")
    events = core.begin(0.0)
    assert kinds(events) == [
        ("DeploymentStarted", None, None),
        ("StepStarted", "A", None),
        ("StepStarted", "B", None),
        ("ExecutionStarted", "A", "web-01"),
        ("ExecutionStarted", "A", "web-02"),
    ]
    assert events[0].plan["steps"][0]["name"] == "A"
    assert events[0].policy["max_parallel_steps"] == 10
    assert [s[1:] for s in core.take_starts()] == [(0, 0, 1), (0, 1, 1)]
    assert core.take_starts() == []


def test_finishing_an_execution_that_is_not_running_is_an_illegal_move_and_changes_nothing():
    core = Core(plan_of(SEED), "d1")
    core.begin(0.0)
    seq = core.seq
    with pytest.raises(IllegalMove):
        core.finish(1, 0, 1, "succeeded", 1.0)  # B on web-01 never started
    with pytest.raises(IllegalMove):
        core.finish(0, 0, 2, "succeeded", 1.0)  # wrong attempt
    assert core.seq == seq


def test_folding_rejects_a_gap_in_seq_and_a_start_on_a_held_lock():
    core = Core(plan_of(SEED), "d1")
    events = core.begin(0.0)
    fresh = Core(plan_of(SEED), "d1")
    with pytest.raises(IllegalMove):
        fresh.apply(events[1])
    fresh.fold(events)
    bogus = ExecutionStarted(deployment="d1", seq=fresh.seq + 1, at=0.0, step="C", target=None, attempt=1)
    with pytest.raises(IllegalMove):  # C is not active yet
        fresh.apply(bogus)


def test_cancel_stops_everything_and_running_executions_end_cancelled():
    core = Core(plan_of(SEED), "d1")
    core.begin(0.0)
    core.take_starts()
    events = core.cancel(2.0)
    # C had not started and B runs nothing (its executions wait for the locks): both end
    # cancelled at once. A waits for its two running executions.
    assert kinds(events) == [("StepFinished", "C", None), ("StepFinished", "B", None)]
    assert {e.outcome for e in events} == {"cancelled"}
    running = core.running_executions()
    assert running == [(0, 0, 1), (0, 1, 1)]
    out = []
    for s, k, attempt in running:
        out += core.finish(s, k, attempt, "cancelled", 2.5)
    out += core.advance(2.5)
    assert [(type(e).__name__, getattr(e, "outcome", None)) for e in out] == [
        ("ExecutionFinished", "cancelled"),
        ("ExecutionFinished", "cancelled"),
        ("StepFinished", "cancelled"),
        ("DeploymentFinished", "cancelled"),
    ]
    assert core.done and core.outcome == "cancelled"
    assert core.take_starts() == []


def test_resume_marks_unfinished_attempts_interrupted_and_runs_them_again():
    live = Core(plan_of(SEED), "d1")
    log = live.begin(0.0)
    log += live.finish(0, 0, 1, "succeeded", 3.0)  # A on web-01 done; web-02 still running
    log += live.advance(3.0)
    # The orchestrator dies here. A new one folds the log:
    core = Core(plan_of(SEED), "d1").fold(log)
    events = core.interrupt_running(10.0)
    # A@web-02 was running, and so was B@web-01 (started at 3 when web-01 came free).
    assert [(e.step, e.target, e.attempt, e.outcome) for e in events] == [
        ("A", "web-02", 1, "interrupted"),
        ("B", "web-01", 1, "interrupted"),
    ]
    events = core.advance(10.0)
    # Both run again as attempt 2; A@web-01, which had finished, is not run again.
    started = [(e.step, e.target, e.attempt) for e in log + events if isinstance(e, ExecutionStarted)]
    assert started == [("A", "web-01", 1), ("A", "web-02", 1), ("B", "web-01", 1), ("A", "web-02", 2), ("B", "web-01", 2)]
    assert core.failures[0][1] == 0, "an interruption uses up no retry"


def test_a_deployment_of_only_skipped_and_empty_steps_finishes_in_the_first_pass():
    core = Core(plan_of("""
        steps:
          - {name: rollback, condition: failure}
          - {name: nothing, roles: [nobody]}
    """), "d")
    events = core.begin(0.0)
    assert kinds(events)[1:] == [
        ("StepSkipped", "rollback", None),
        ("StepStarted", "nothing", None),
        ("StepFinished", "nothing", None),
        ("DeploymentFinished", None, None),
    ]
    assert core.done and core.outcome == "succeeded"


def test_retry_delays_are_announced_as_wakeups():
    core = Core(plan_of("""
        steps:
          - {name: A, retries: 1, retry_delay: 15s}
    """), "d")
    core.begin(0.0)
    core.finish(0, 0, 1, "failed", 4.0, exit_code=3)
    assert core.advance(4.0) == []
    assert core.next_wakeup() == 19.0
    assert kinds(core.advance(18.9)) == []
    assert kinds(core.advance(19.0)) == [("ExecutionStarted", "A", None)]
    assert core.next_wakeup() is None


PURE = ["engine/core.py", "engine/events.py", "engine/plan.py", "engine/report.py"]
FORBIDDEN = {"trio", "sqlite3", "sqlite_utils", "time", "random", "datetime", "asyncio", "os", "subprocess", "socket", "threading"}


@pytest.mark.parametrize("path", PURE)
def test_the_pure_core_imports_only_the_standard_library_and_msgspec(path):
    tree = ast.parse((ROOT / path).read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    allowed_third_party = {"msgspec", "engine"}
    for m in modules:
        assert m not in FORBIDDEN, f"{path} imports {m}"
        assert m in allowed_third_party or m in sys.stdlib_module_names or m == "__future__", f"{path} imports {m}"
    engine_imports = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("engine")
    }
    assert engine_imports <= {"engine.core", "engine.events", "engine.plan", "engine.report"}, engine_imports
