"""Resume, leases and failures of the runtime, in virtual time (pytest-trio's
autojump_clock) with adapters that say what a target's records would say: exact times
for every adopted attempt, the first pass held until adoption is done, the owner
lease, a store that fails, and attempts that are slow to stop."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from engine.adapter import NOT_STARTED, AttemptResult, ExecutionRequest
from engine.core import Core
from engine.events import DeploymentResumed, ExecutionFinished, ExecutionStarted
from engine.lease import Owner, this_process
from engine.runtime import CancelledBeforeStart, MAX_OUTPUT_LINES, OutputKeeper, Runtime
from engine.store import LeaseHeld, LeaseLost, MemoryStore, StoreError
from tests.helpers import plan_of

ROOT = Path(__file__).resolve().parents[2]

FLEET = """
    targets: [{name: t1, roles: [x]}, {name: t2, roles: [x]}, {name: t3, roles: [x]}, {name: t4, roles: [x]}, {name: t5, roles: [x]}]
    steps:
      - {name: deploy, roles: [x], run: deploy}
      - {name: after, run: notify}
"""


def crashed(plan, store: MemoryStore, deployment: str = "d", owner: Owner | None = None) -> list:  # noqa: ANN001
    """The log a run leaves when its orchestrator dies right after the first pass."""
    core = Core(plan, deployment)
    events = core.begin(0.0, None, {})
    store.claim(owner or dead_owner(), events)
    return store.read(deployment)


def dead_owner() -> Owner:
    me = this_process()
    return Owner(me.host, 2**22 + 17, "1", me.boot_id, 0.0, "dead0000")  # a pid no process has


def short(e) -> tuple:  # noqa: ANN001
    """An event in brief; `at` to 1e-8 s (a real run gathers completions 1e-9 s apart)."""
    return (type(e).__name__, getattr(e, "step", None), getattr(e, "target", None), getattr(e, "attempt", None),
            getattr(e, "outcome", None), round(e.at, 8))


class Records:
    """What each target's records say about attempt 1 of `deploy` (see `adopt`), and
    `run` for anything started afresh: 2 s on t4, 3 s elsewhere, 1 s for `after`."""

    name = "records"

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    async def adopt(self, request: ExecutionRequest, output, running=None):  # noqa: ANN001, ANN201
        target = request.target.name if request.target else None
        self.calls.append(("adopt", target, request.attempt, trio.current_time()))
        if target == "t1":
            output("t1 said this before the crash")
            return AttemptResult("succeeded", 0, ended_after=4.0)
        if target == "t2":
            return AttemptResult("succeeded", 0, ended_after=7.0)
        if target == "t3":
            running()
            await trio.sleep(5)
            return AttemptResult("succeeded", 0)
        if target == "t4":
            return NOT_STARTED
        return None  # t5: unknowable

    async def stop_orphans(self, deployment: str, attempts) -> int:  # noqa: ANN001
        self.calls.append(("stop_orphans", sorted(attempts), trio.current_time()))
        return 1

    async def run(self, request: ExecutionRequest, output) -> AttemptResult:  # noqa: ANN001
        target = request.target.name if request.target else None
        self.calls.append(("run", target, request.attempt, trio.current_time()))
        await trio.sleep(1 if request.step.name == "after" else 2 if target == "t4" else 3)
        return AttemptResult("succeeded", 0)


async def test_resume_adopts_every_unfinished_attempt_as_its_record_says(autojump_clock):
    plan = plan_of(FLEET)
    store = MemoryStore()
    log = crashed(plan, store)
    adapter = Records()
    core = Core(plan, "d").fold(log)
    t0 = trio.current_time()
    outcome = await Runtime(core, store, lambda t: adapter, ROOT, wall_clock=lambda: None, resume_at=10.0, log=log).run()
    assert outcome == "succeeded"
    after = store.read("d")[len(log):]
    assert isinstance(after[0], DeploymentResumed) and (after[0].at, after[0].reason) == (0.0, "gone")
    assert [short(e) for e in after[1:]] == [
        # Ended while nobody watched: at the times their records say, before anything new.
        ("ExecutionFinished", "deploy", "t1", 1, "succeeded", 4.0),
        ("ExecutionFinished", "deploy", "t2", 1, "succeeded", 7.0),
        # Unknowable: what is left of it is stopped, then it runs again (no retry used up).
        ("ExecutionFinished", "deploy", "t5", 1, "interrupted", 10.0),
        ("ExecutionStarted", "deploy", "t5", 2, None, 10.0),
        # Never ran: runs now as attempt 1 (2 s); t3 ran on and is waited for (5 s).
        ("ExecutionFinished", "deploy", "t4", 1, "succeeded", 12.0),
        ("ExecutionFinished", "deploy", "t5", 2, "succeeded", 13.0),
        ("ExecutionFinished", "deploy", "t3", 1, "succeeded", 15.0),
        ("StepFinished", "deploy", None, None, "succeeded", 15.0),
        ("StepStarted", "after", None, None, None, 15.0),
        ("ExecutionStarted", "after", None, 1, None, 15.0),
        ("ExecutionFinished", "after", None, 1, "succeeded", 16.0),
        ("StepFinished", "after", None, None, "succeeded", 16.0),
        ("DeploymentFinished", None, None, None, "succeeded", 16.0),
    ]
    assert [o.line for o in store.output("d")] == ["t1 said this before the crash"]
    assert sorted(c[:3] for c in adapter.calls if c[0] == "adopt") == [("adopt", f"t{i}", 1) for i in range(1, 6)]
    # Nothing new ran before every adoption was decided and the first pass committed;
    # t5's leftovers were stopped before its second attempt started.
    orphans = next(c for c in adapter.calls if c[0] == "stop_orphans")
    assert orphans[1] == [("deploy", "t5", 1)]
    assert sorted(c[:3] for c in adapter.calls if c[0] == "run" and c[1]) == [("run", "t4", 1), ("run", "t5", 2)]
    assert all(c[-1] == t0 for c in adapter.calls if c[0] == "run" and c[1] is not None)
    assert adapter.calls.index(orphans) < next(i for i, c in enumerate(adapter.calls) if c[:3] == ("run", "t5", 2))


async def test_an_adopted_attempt_still_running_keeps_the_timeout_of_its_original_start(autojump_clock):
    plan = plan_of("steps: [{name: deploy, run: deploy, timeout: 30}]")
    store = MemoryStore()
    log = crashed(plan, store)
    stopped: list[float] = []

    class StillRunning:
        name = "still"

        async def adopt(self, request, output, running=None):  # noqa: ANN001, ANN201
            running()
            try:
                await trio.sleep(1000)
            except trio.Cancelled:
                stopped.append(trio.current_time())
                raise

        async def run(self, request, output):  # noqa: ANN001, ANN201
            raise AssertionError("nothing runs afresh")

    core = Core(plan, "d").fold(log)
    t0 = trio.current_time()
    outcome = await Runtime(core, store, lambda t: StillRunning(), ROOT, wall_clock=lambda: None, resume_at=20.0, log=log).run()
    assert outcome == "failed"
    finished = [e for e in store.read("d") if isinstance(e, ExecutionFinished)]
    assert [(e.outcome, e.at) for e in finished] == [("timed_out", 30.0)]  # 30 s after its start at 0
    assert stopped == [t0 + 10]


async def test_a_cancel_during_adoption_starts_nothing_new(autojump_clock):
    plan = plan_of(FLEET)
    store = MemoryStore()
    log = crashed(plan, store)
    runs: list[str] = []

    class Slow:
        """Every record takes 5 s to read (a slow link), then says: never started."""

        name = "slow"

        async def adopt(self, request, output, running=None):  # noqa: ANN001, ANN201
            await trio.sleep(5)
            return NOT_STARTED

        async def run(self, request, output):  # noqa: ANN001, ANN201
            runs.append(request.target.name if request.target else "server")
            return AttemptResult("succeeded", 0)

    core = Core(plan, "d").fold(log)
    runtime = Runtime(core, store, lambda t: Slow(), ROOT, wall_clock=lambda: None, resume_at=10.0, log=log)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.run)
        await trio.sleep(2)
        runtime.cancel()
    events = store.read("d")[len(log):]
    assert runs == []
    assert not any(isinstance(e, ExecutionStarted) for e in events)
    assert events[-1].outcome == "cancelled"
    assert {(e.target, e.outcome) for e in events if isinstance(e, ExecutionFinished)} == {
        (f"t{i}", "cancelled") for i in range(1, 6)
    }


async def test_a_live_owner_is_never_taken_over(autojump_clock):
    plan = plan_of(FLEET)
    store = MemoryStore()
    log = crashed(plan, store, owner=this_process())  # alive: this very process, heartbeat now
    core = Core(plan, "d").fold(log)
    with pytest.raises(LeaseHeld, match="is being run by pid"):
        await Runtime(core, store, lambda t: Records(), ROOT, wall_clock=lambda: None, resume_at=10.0, log=log).run()
    assert store.read("d") == log  # nothing written


async def test_a_stale_heartbeat_is_taken_over_and_the_old_owner_stops_without_touching_commands(autojump_clock):
    plan = plan_of("steps: [{name: deploy, run: deploy}]")
    store = MemoryStore()
    stale = Owner("another-host", 1, "1", "", -1000.0, "stale000")  # another host: only its heartbeat tells
    log = crashed(plan, store, owner=stale)
    detached: list[bool] = []

    class Forever:
        name = "forever"

        async def adopt(self, request, output, running=None):  # noqa: ANN001, ANN201
            running()
            try:
                await trio.sleep(1000)
            except trio.Cancelled:
                detached.append(self.detached)
                raise

        def detach(self) -> None:
            self.detached = True

        detached = False

    core = Core(plan, "d").fold(log)
    adapter = Forever()
    runtime = Runtime(core, store, lambda t: adapter, ROOT, wall_clock=lambda: None, resume_at=10.0, log=log, heartbeat=5)
    async with trio.open_nursery() as nursery:

        async def resume() -> None:
            with pytest.raises(LeaseLost, match="lease was taken over"):
                await runtime.run()

        nursery.start_soon(resume)
        await trio.sleep(1)
        resumed = store.read("d")[-1]
        assert isinstance(resumed, DeploymentResumed) and resumed.reason == "stale" and "another-host" in resumed.previous
        store._owners["d"] = Owner("third", 3, "3", "", 1e12, "third000")  # someone took it over meanwhile
    assert detached == [True]  # the command was left running for the new owner


async def test_a_store_that_fails_stops_the_run_with_its_own_error(autojump_clock):
    plan = plan_of("steps: [{name: a, run: a}, {name: b, run: b}]")

    class Full(MemoryStore):
        def append(self, events, output=()):  # noqa: ANN001
            if any(getattr(e, "step", None) == "b" for e in events):
                raise StoreError("abreast.db: cannot write to the event store: database or disk is full")
            super().append(events, output)

    store = Full()

    class Quick:
        name = "quick"
        detached = False

        async def run(self, request, output):  # noqa: ANN001, ANN201
            await trio.sleep(1)
            return AttemptResult("succeeded", 0)

        def detach(self) -> None:
            Quick.detached = True

    with pytest.raises(StoreError, match="disk is full"):  # the error itself, not a group
        await Runtime(Core(plan, "d"), store, lambda t: Quick(), ROOT, wall_clock=lambda: None).run()
    assert Quick.detached
    assert [type(e).__name__ for e in store.read("d")][-1] == "ExecutionStarted"


async def test_a_cancel_before_the_first_event_writes_nothing(autojump_clock):
    plan = plan_of("steps: [{name: a, run: a}]")
    store = MemoryStore()
    runtime = Runtime(Core(plan, "d"), store, lambda t: Records(), ROOT, wall_clock=lambda: None)
    runtime.cancel()
    with pytest.raises(CancelledBeforeStart):
        await runtime.run(handle_signals=True)
    assert store.read("d") == [] and store.owner("d") is None


async def test_a_timed_out_attempt_ends_when_its_work_has_stopped_and_only_then_is_retried(autojump_clock):
    # The command traps TERM and takes 3 s to stop: attempt 1 times out at 2 but ends at
    # 5; attempt 2 starts at 5, gets its full 2 s, and times out at 7 (ending at 10).
    plan = plan_of("steps: [{name: T, run: slow, timeout: 2, retries: 1}]")
    store = MemoryStore()

    class SlowToStop:
        name = "slow"

        async def run(self, request, output):  # noqa: ANN001, ANN201
            try:
                await trio.sleep(100)
            except trio.Cancelled:
                with trio.CancelScope(shield=True):
                    await trio.sleep(3)
                raise

    await Runtime(Core(plan, "d"), store, lambda t: SlowToStop(), ROOT, wall_clock=lambda: None).run()
    assert [short(e) for e in store.read("d") if "Execution" in type(e).__name__] == [
        ("ExecutionStarted", "T", None, 1, None, 0.0),
        ("ExecutionFinished", "T", None, 1, "timed_out", 5.0),
        ("ExecutionStarted", "T", None, 2, None, 5.0),
        ("ExecutionFinished", "T", None, 2, "timed_out", 10.0),
    ]


def test_output_keeps_its_first_and_last_lines_and_says_what_it_cut():
    keeper = OutputKeeper("d", "s", "t", 1)
    for i in range(1, 5002):
        keeper.add(f"line {i}" if i != 3 else "x" * 5000)
    lines = keeper.rest()
    half = MAX_OUTPUT_LINES // 2
    assert len(lines) == MAX_OUTPUT_LINES + 1
    assert [o.line for o in lines[:2]] == ["line 1", "line 2"]
    assert lines[2].line == "x" * 4000 + " [abreast: line cut at 4000 characters]"
    assert lines[half].line == f"[abreast: 3001 lines cut here (lines {half + 1}-{5001 - half} of 5001); the first {half} and the last {half} are kept]"
    assert lines[-1].line == "line 5001" and lines[-1].n == 5001
    assert [o.n for o in lines] == sorted(o.n for o in lines) and len({o.n for o in lines}) == len(lines)
    few = OutputKeeper("d", "s", None, 1)
    for i in range(3):
        few.add(str(i))
    assert [(o.n, o.line) for o in few.fresh()] == [(1, "0"), (2, "1"), (3, "2")]
    assert few.rest() == []
    # After a crash, the lines a dead orchestrator stored are fed again and skipped.
    again = OutputKeeper("d", "s", None, 1, stored=2)
    for i in range(4):
        again.add(str(i))
    assert [(o.n, o.line) for o in again.rest()] == [(3, "2"), (4, "3")]


async def test_output_reaches_the_store_while_the_attempt_runs_and_once_only_after_a_crash(autojump_clock):
    plan = plan_of("steps: [{name: talk, run: talk}]")
    store = MemoryStore()
    seen: list[list[str]] = []

    class Talker:
        name = "talker"

        async def run(self, request, output):  # noqa: ANN001, ANN201
            for i in range(1, 4):
                output(f"line {i}")
                await trio.sleep(2)
                seen.append([o.line for o in store.output("d")])
            return AttemptResult("succeeded", 0)

        async def adopt(self, request, output, running=None):  # noqa: ANN001, ANN201
            for i in range(1, 5):  # the record holds all of it, from the start
                output(f"line {i}")
            return AttemptResult("succeeded", 0, ended_after=7.0)

    await Runtime(Core(plan, "d"), store, lambda t: Talker(), ROOT, wall_clock=lambda: None, heartbeat=1).run()
    assert seen == [["line 1"], ["line 1", "line 2"], ["line 1", "line 2", "line 3"]]  # every heartbeat
    crashed_store = MemoryStore()
    log = crashed(plan, crashed_store)
    crashed_store.append((), output=[o for o in store.output("d")[:2]])  # what the dead orchestrator had stored
    core = Core(plan, "d").fold(log)
    await Runtime(core, crashed_store, lambda t: Talker(), ROOT, wall_clock=lambda: None, resume_at=9.0, log=log).run()
    assert [(o.n, o.line) for o in crashed_store.output("d")] == [(1, "line 1"), (2, "line 2"), (3, "line 3"), (4, "line 4")]


async def test_a_cancel_before_a_resume_takes_over_leaves_the_deployment_as_it_was(autojump_clock):
    plan = plan_of(FLEET)
    store = MemoryStore()
    log = crashed(plan, store)
    runtime = Runtime(Core(plan, "d").fold(log), store, lambda t: Records(), ROOT, wall_clock=lambda: None, resume_at=10.0, log=log)
    runtime.cancel()
    with pytest.raises(CancelledBeforeStart):
        await runtime.run(handle_signals=True)
    assert store.read("d") == log and store.owner("d").token == "dead0000"
