"""The trio runtime: drives the core for a real deployment.

One nursery per deployment. The main task owns the core: it commits each batch of
events to the store *before* acting on them (starting the executions they name), then
waits for completions. Each execution runs in its own task, through the adapter the
runtime was handed for its target, inside a cancel scope (the deployment's cancel) and,
with `timeout`, a `move_on_after` (an attempt that runs longer fails as `timed_out`).
Completions come back over a memory channel; everything that has completed by the time
the main task wakes is applied (in time order, ties in start order), then one decision
pass runs, exactly as the simulator does it.

`at` is `trio.current_time()` since the deployment started (monotonic; under
pytest-trio's `autojump_clock`, virtual and exact), rounded to 1e-9 s like the
simulator's, and never goes back; `wall` is UTC.
A dry run at `--speed X` runs on a clock X times faster (`time_scale`): `at`, retry
delays and timeouts are in the rehearsed deployment's seconds, so its log reads like
the simulation of the same scenario, while `wall` keeps the real time.

Every deadline is absolute on the trio clock, measured from the instant the pass
decided the attempt (`ExecutionRequest.start_clock`): completions, timeouts and retry
delays that fall on one instant of the deployment fall on one instant of the clock
(up to float noise, which the 1e-9 s gathering window absorbs).
Ctrl-C, SIGTERM or SIGHUP (with `handle_signals=True`) cancels: nothing new starts,
running executions are cancelled through their adapters, and the log ends `cancelled`;
one that comes before the first event is written ends the run with nothing written
(`CancelledBeforeStart`).

One orchestrator per deployment: the first commit of `run` (deployment.started) and of
a resume (deployment.resumed) takes the owner lease in the same transaction
(engine/lease.py), and a task renews its heartbeat. A store that fails (disk full, a
read-only or replaced file, the lease taken over) stops the runtime at once without
touching the commands: the adapters are detached, the attempts keep running under
their records, and the error is raised as it is (no exception group).

Resuming, every execution the log shows started and not finished is adopted through
its adapter (`Adapter.adopt`): what ended while no orchestrator watched is recorded
with the exit status it had, at the time it ended (its `execution.started` plus the
record's `ended_after`), before the first decision pass; what still runs is waited for
like any attempt (its timeout counts from its original start); what never started
runs now as that same attempt; only what cannot be known is recorded `interrupted`
(after `stop_orphans` stopped whatever may be left of it) and runs again.
"""

from __future__ import annotations

import inspect
import math
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import trio

from engine.adapter import MAX_LINE_CHARS, NOT_STARTED, AdapterFor, AttemptResult, ExecutionRequest
from engine.core import SERVER, Core
from engine.events import AnyEvent, DeploymentFinished, DeploymentResumed, Event, ExecutionFinished, ExecutionStarted
from engine.lease import HEARTBEAT_SECONDS, Owner, may_take_over, this_process
from engine.store import EventStore, LeaseHeld, OutputLine, StoreError

INSTANT = 1e-9  # seconds of deployment time that count as one instant
MAX_OUTPUT_LINES = 2000  # kept per attempt: the first half and the last half, the rest counted
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class CancelledBeforeStart(Exception):
    """A cancel (a signal) came before this run wrote anything (for `run`, the
    deployment's first event; for a resume, its takeover): nothing was written and
    nothing ran; a deployment being resumed stays as it was."""


class Completion:
    __slots__ = ("at", "order", "step", "k", "attempt", "outcome", "exit_code", "error", "lines")

    def __init__(self, at, order, step, k, attempt, outcome, exit_code, error, lines):  # noqa: ANN001
        self.at, self.order, self.step, self.k, self.attempt = at, order, step, k, attempt
        self.outcome, self.exit_code, self.error, self.lines = outcome, exit_code, error, lines


class OutputKeeper:
    """One attempt's output as the store keeps it: the first `MAX_OUTPUT_LINES // 2`
    lines and the last as many (errors are printed last), a marker line between them
    that says how many were cut, and every line cut at `MAX_LINE_CHARS` characters with
    a note saying so. Memory stays bounded whatever the command prints.

    The first lines go to the store while the attempt runs (`fresh`, at each heartbeat
    and commit); the rest with its `execution.finished` (`rest`). `stored` lines were
    stored by an orchestrator that died: the adapter feeds them again, and they are
    skipped."""

    __slots__ = ("deployment", "step", "target", "attempt", "head", "n_head", "tail", "total", "skip")

    def __init__(self, deployment: str, step: str, target: str | None, attempt: int, stored: int = 0):
        self.deployment, self.step, self.target, self.attempt = deployment, step, target, attempt
        self.head: list[OutputLine] = []  # first lines not yet handed to the store
        self.n_head = 0  # first lines so far, stored or not
        self.tail: deque[str] = deque(maxlen=MAX_OUTPUT_LINES - MAX_OUTPUT_LINES // 2)
        self.total = 0
        self.skip = stored

    def add(self, line: str) -> None:
        self.total += 1
        if self.skip:
            self.skip -= 1
            self.n_head += 1
            return
        if len(line) > MAX_LINE_CHARS:
            line = f"{line[:MAX_LINE_CHARS]} [abreast: line cut at {MAX_LINE_CHARS} characters]"
        if self.n_head < MAX_OUTPUT_LINES // 2:
            self.n_head += 1
            self.head.append(OutputLine(self.deployment, self.step, self.target, self.attempt, self.total, line))
        else:
            self.tail.append(line)

    def fresh(self) -> list[OutputLine]:
        """The first lines that came since the last call (they are final)."""
        out, self.head = self.head, []
        return out

    def rest(self) -> list[OutputLine]:
        """Everything not yet handed out, once the attempt has ended."""
        out = self.fresh()
        tail = self.tail
        first_tail = self.total - len(tail) + 1
        cut = first_tail - self.n_head - 1
        d, s, t, a = self.deployment, self.step, self.target, self.attempt
        if cut:
            out.append(
                OutputLine(
                    d, s, t, a, self.n_head + 1,
                    f"[abreast: {cut} lines cut here (lines {self.n_head + 1}-{first_tail - 1} of {self.total}); "
                    f"the first {self.n_head} and the last {len(tail)} are kept]",
                )
            )
        out.extend(OutputLine(d, s, t, a, first_tail + i, line) for i, line in enumerate(tail))
        return out


class Runtime:
    def __init__(
        self,
        core: Core,
        store: EventStore,
        adapter_for: AdapterFor,
        workdir: Path,
        on_events: Callable[[list[Event]], None] | None = None,
        wall_clock: Callable[[], str | None] = utc_now,
        resume_at: float = 0.0,
        options: dict | None = None,
        time_scale: float = 1.0,
        gather: float = INSTANT,
        threaded_writes: bool = False,
        on_orphans: Callable[[int], None] | None = None,
        owner: Owner | None = None,
        log: Sequence[AnyEvent] = (),
        on_adopted: Callable[[str, str, str | None, int], None] | None = None,
        heartbeat: float = HEARTBEAT_SECONDS,
    ):
        """`resume_at`: the `at` this run starts from (0 for a new deployment; on resume,
        where the log left off plus the time the deployment was left alone). `log`: on
        resume, the events `core` was folded from. `owner`: this orchestrator in the
        lease (default: this process)."""
        self.core = core
        self.store = store
        self.adapter_for = adapter_for
        self.workdir = workdir
        self.on_events = on_events
        self.wall_clock = wall_clock
        self.resume_at = resume_at
        self.options = options
        self.scale = time_scale
        self.gather = gather
        self.threaded_writes = threaded_writes
        self.on_orphans = on_orphans
        self.on_adopted = on_adopted
        self.owner = owner if owner is not None else this_process()
        self.log = log
        self.heartbeat = heartbeat
        self._t0 = 0.0
        self._last_at = resume_at
        self._instant = resume_at  # when the current batch's instant began
        self._scopes: dict[tuple[int, int], trio.CancelScope] = {}
        self._wait_scope: trio.CancelScope | None = None
        self._cancel_requested = False
        self._send, self._recv = trio.open_memory_channel[Completion](math.inf)
        self._nursery: trio.Nursery | None = None
        self._store_lock = trio.Lock()
        self._failure: StoreError | None = None
        self._unclassified = 0  # adoptions that do not yet know what they found
        self._classified = trio.Event()
        self._go = trio.Event()  # set once the first decision pass is committed
        self._targets = {t.name: t for t in core.plan.targets}
        self._keepers: dict[tuple[int, int], OutputKeeper] = {}  # of the running attempts
        self._adapters: list[object] = []  # every adapter in use, each once

    # --------------------------------------------------------------------- the loop

    async def run(self, handle_signals: bool = False) -> str:
        """Run (or resume) the deployment to its end; return its outcome.

        Raises `CancelledBeforeStart` (nothing written) or the `StoreError` that
        stopped it (the commands left running under their records)."""
        core = self.core
        self._t0 = trio.current_time() - self.resume_at / self.scale
        started = False
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if handle_signals:
                await nursery.start(self._watch_signals)
                await trio.sleep(0)  # a signal already delivered is seen before anything is written
            try:
                if self._cancel_requested:  # before this run wrote anything (a resume too)
                    nursery.cancel_scope.cancel()
                else:
                    started = True
                    await self._main(nursery)
            except StoreError as e:
                self._fail(e)
            nursery.cancel_scope.cancel()  # the signal watcher and the heartbeat
        if self._failure is not None:
            raise self._failure
        if not started:
            raise CancelledBeforeStart("cancelled before anything was recorded")
        assert core.outcome is not None
        return core.outcome

    async def _main(self, nursery: trio.Nursery) -> None:
        core = self.core
        if not core.started:
            for adapter in self._every_adapter():
                prepare = getattr(adapter, "prepare", None)
                if prepare is not None:
                    try:
                        prepare(core.deployment)  # before any attempt is recorded as started
                    except OSError as e:
                        raise StoreError(f"cannot keep the attempts' records: {e}") from None
            now, wall = self._now(), self.wall_clock()
            await self._commit(core.begin(now, wall, self.options), claim=None)
            nursery.start_soon(self._renew_lease)
            self._go.set()
        else:
            await self._resume()
        self._launch()
        while not core.done:
            batch = await self._wait()
            events: list[Event] = []
            lines: list[OutputLine] = []
            wall = self.wall_clock()
            for c in sorted(batch, key=lambda c: (c.at, c.order)):
                lines += c.lines
                at = max(c.at, self._last_at)
                events += core.finish(c.step, c.k, c.attempt, c.outcome, at, c.exit_code, c.error, wall)
                self._last_at = at
            self._last_at = max(self._instant, self._last_at)
            cancelling = self._cancel_requested and not core.cancelling
            if cancelling:
                events += core.cancel(self._last_at, wall)
            events += core.advance(self._last_at, wall)
            await self._commit(events, lines)
            if cancelling:
                for scope in list(self._scopes.values()):
                    scope.cancel()
            self._launch()

    async def _wait(self) -> list[Completion]:
        """Block until something completes or a retry delay runs out; then take every
        completion that is in (those woken at the same instant report before we look)."""
        batch: list[Completion] = []
        if self._cancel_requested and not self.core.cancelling:
            self._instant = self._now()
            return batch
        wake = self.core.next_wakeup()
        deadline = self._t0 + wake / self.scale if wake is not None else math.inf
        with trio.CancelScope(deadline=deadline) as scope:
            self._wait_scope = scope
            batch.append(await self._recv.receive())
        self._wait_scope = None
        if batch:
            self._instant = self._last_at  # the completions' own times set the instant
        elif wake is not None and trio.current_time() >= deadline:
            # The retry delay ran out: it is `wake` now, whatever float noise in
            # (t0 + wake) - t0 says, or the pass would not see the retry as due.
            self._instant = max(self._last_at, wake)
        else:
            self._instant = self._now()  # woken by cancel(): no need to gather
            return batch
        # Times are kept to 1e-9 s: whatever else ends within that instant (a timeout at
        # the same time as a retry, float noise between two equal durations) belongs to
        # this batch, as it does in the simulator. In real time this costs a checkpoint.
        if self.gather > 0:
            with trio.move_on_at(trio.current_time() + self.gather / self.scale):
                while True:
                    batch.append(await self._recv.receive())
        while True:
            try:
                batch.append(self._recv.receive_nowait())
            except trio.WouldBlock:
                return batch

    def _clock(self) -> float:
        """The deployment's time now (not clamped to what the log has said)."""
        return round((trio.current_time() - self._t0) * self.scale, 9)

    def _now(self) -> float:
        now = max(self._clock(), self._last_at)
        self._last_at = now
        return now

    async def _commit(self, events: list[Event], lines: list[OutputLine] | None = None, claim: str | None | bool = False) -> None:
        """Persist first: nothing the events name happens before they are stored.

        `claim` (the token of the owner being taken over, or None: no owner) takes the
        owner lease in the same transaction. Once stored, the records of the attempts
        that ended (and of the whole deployment, when it ended) are forgotten.

        A store that blocks (a SQLite file) may write in a worker thread: meanwhile the
        other tasks go on, and whatever completes waits for the next batch, so a busy
        deployment commits in bigger batches by itself (group commit)."""
        if not events and not lines:
            return
        store = self.store
        forget = self._forgettable(events)

        def write() -> None:
            if claim is not False:
                store.claim(self.owner, events, claim)  # type: ignore[arg-type]
            else:
                store.append(events, output=lines or ())  # type: ignore[call-arg]
            for forget_them in forget:
                forget_them()

        async with self._store_lock:
            if self.threaded_writes and getattr(store, "blocking", False):
                await trio.to_thread.run_sync(write)
            else:
                write()
        if events and self.on_events is not None:
            self.on_events(events)

    def _forgettable(self, events: list[Event]) -> list[Callable[[], None]]:
        """What the adapters may forget once `events` are stored (see engine/adapter.py)."""
        out: list[Callable[[], None]] = []
        by_adapter: dict[int, tuple[object, list[tuple[str, str | None, int]]]] = {}
        deployment = self.core.deployment
        for ev in events:
            if type(ev) is ExecutionFinished:
                adapter = self.adapter_for(self._targets[ev.target] if ev.target is not None else None)
                entry = by_adapter.get(id(adapter))
                if entry is None:
                    entry = by_adapter[id(adapter)] = (adapter, [])
                entry[1].append((ev.step, ev.target, ev.attempt))
            elif type(ev) is DeploymentFinished:
                for adapter in self._every_adapter():
                    forget_all = getattr(adapter, "forget_deployment", None)
                    if forget_all is not None:
                        out.append(lambda f=forget_all: f(deployment))
        for adapter, attempts in by_adapter.values():
            forget = getattr(adapter, "forget", None)
            if forget is not None:
                out.insert(0, lambda f=forget, a=attempts: f(deployment, a))
        return out

    def _every_adapter(self) -> list[object]:
        if not self._adapters:
            for target in (*self.core.plan.targets, None):
                adapter = self.adapter_for(target)
                if not any(a is adapter for a in self._adapters):
                    self._adapters.append(adapter)
        return self._adapters

    def _launch(self) -> None:
        assert self._nursery is not None
        started_at = self._last_at  # the instant of the pass that started them
        for order, s, k, attempt in self.core.take_starts():
            self._nursery.start_soon(self._execute, order, s, k, attempt, started_at)

    # ------------------------------------------------------------ the owner lease

    async def _renew_lease(self) -> None:
        """Renew the heartbeat while we run, and store the first lines of output of the
        attempts still running (`history logs` shows them). A lease someone else holds
        now, or a store that cannot be written or was replaced, stops the runtime
        (`_fail`)."""
        store = self.store
        while True:
            await trio.sleep(self.heartbeat)
            now = time.time()
            lines = [line for keeper in self._keepers.values() for line in keeper.fresh()]

            def write() -> None:
                store.renew(self.core.deployment, self.owner, now)
                if lines:
                    store.append((), output=lines)  # type: ignore[call-arg]

            async with self._store_lock:
                try:
                    if self.threaded_writes and getattr(store, "blocking", False):
                        await trio.to_thread.run_sync(write)
                    else:
                        write()
                except StoreError as e:
                    self._fail(e)
                    return

    def _fail(self, error: StoreError) -> None:
        """The store failed: stop now, leaving every command running under its record
        (the adapters are detached), for a later `resume` to adopt."""
        if self._failure is None:
            self._failure = error
        for adapter in self._every_adapter():
            detach = getattr(adapter, "detach", None)
            if detach is not None:
                detach()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # ---------------------------------------------------------------- resuming

    async def _resume(self) -> None:
        """Take the deployment over, adopt what the log left unfinished, then run the
        first decision pass (see the module docstring)."""
        core = self.core
        if self.log:
            self._last_at = self._instant = min(self.log[-1].at, self._last_at)
        previous = self.store.owner(core.deployment)
        if previous is None:
            reason = "none"
        elif previous.token == self.owner.token:
            reason = "ours"
        else:
            why = may_take_over(previous)
            if why is None:
                raise LeaseHeld(core.deployment, previous)
            reason = why
        resumed = DeploymentResumed(
            deployment=core.deployment,
            seq=core.seq + 1,
            at=self._last_at,
            wall=self.wall_clock(),
            host=self.owner.host,
            pid=self.owner.pid,
            previous=previous.describe() if previous is not None else None,
            reason=reason,
        )
        await self._commit([resumed], claim=previous.token if previous is not None else None)
        core.apply(resumed)
        assert self._nursery is not None
        self._nursery.start_soon(self._renew_lease)  # ours from now on, adoption included
        running = core.running_executions()
        if running:
            started_at = {
                (ev.step, ev.target, ev.attempt): ev.at for ev in self.log if type(ev) is ExecutionStarted
            }
            self._unclassified = len(running)
            assert self._nursery is not None
            for s, k, attempt in running:
                t = core.exec_targets[s][k]
                name = core.target_names[t] if t != SERVER else None
                at = started_at.get((core.step_names[s], name, attempt), self._last_at)
                self._nursery.start_soon(self._execute, core.start_order[s][k], s, k, attempt, at, True)
            # Until every adoption knows what it found, nothing new may be decided: what
            # ended while nobody watched must be recorded first, at the time it ended.
            with trio.CancelScope() as scope:
                self._wait_scope = scope
                await self._classified.wait()
            self._wait_scope = None
        batch: list[Completion] = []
        while True:
            try:
                batch.append(self._recv.receive_nowait())
            except trio.WouldBlock:
                break
        events: list[Event] = []
        lines: list[OutputLine] = []
        now = self._clock()
        wall = self.wall_clock()
        for c in sorted(batch, key=lambda c: (c.at, c.order)):
            lines += c.lines
            at = max(min(c.at, now), self._last_at)
            events += core.finish(c.step, c.k, c.attempt, c.outcome, at, c.exit_code, c.error, wall)
            self._last_at = at
        now = self._now()
        if self._cancel_requested:
            events += core.cancel(now, wall)
        events += core.advance(now, wall)
        await self._commit(events, lines)
        if self._cancel_requested:
            for scope in list(self._scopes.values()):
                scope.cancel()
        self._go.set()

    def _classify(self) -> Callable[[], None]:
        """A callback for one adoption: it knows what it found (call it once or more)."""
        done = False

        def classified() -> None:
            nonlocal done
            if not done:
                done = True
                self._unclassified -= 1
                if self._unclassified <= 0:
                    self._classified.set()

        return classified

    # ----------------------------------------------------------------- cancellation

    def cancel(self) -> None:
        """Ask for the deployment to be cancelled (idempotent). The main task records it,
        commits, and then cancels the running executions: only it touches the core."""
        self._cancel_requested = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()  # wake the loop now

    async def _watch_signals(self, task_status=trio.TASK_STATUS_IGNORED) -> None:  # noqa: ANN001
        with trio.open_signal_receiver(*SIGNALS) as signals:
            task_status.started()
            async for _ in signals:
                self.cancel()

    # -------------------------------------------------------------------- executions

    async def _execute(self, order: int, s: int, k: int, attempt: int, started_at: float, adopting: bool = False) -> None:
        # Measured from the instant the pass decided it (on the trio clock), so the
        # time it takes to get going is part of the attempt, not a drift of the clock.
        # An adopted attempt: from its original start.
        began = self._t0 + started_at / self.scale
        core = self.core
        plan = core.plan
        step = plan.steps[s]
        t = core.exec_targets[s][k]
        target = plan.targets[t] if t != SERVER else None
        request = ExecutionRequest(
            deployment=core.deployment, step=step, target=target, attempt=attempt, workdir=self.workdir, start_clock=began
        )
        target_name = target.name if target is not None else None
        stored = 0
        if adopting:  # what a dead orchestrator stored of its output is fed again: skip it
            stored = sum(1 for o in self.store.output(core.deployment, step.name, target_name) if o.attempt == attempt and o.target == target_name)
        keeper = OutputKeeper(core.deployment, step.name, target_name, attempt, stored)
        self._keepers[(s, k)] = keeper
        classified = self._classify() if adopting else None
        scope = trio.CancelScope()
        self._scopes[(s, k)] = scope
        result: AttemptResult | None = None
        outcome = "failed"
        error: str | None = None
        absolute = False  # the attempt's end is on the deployment's clock, not relative to `began`
        ended_after: float | None = None
        try:
            with scope:
                adapter = self.adapter_for(target)
                run = True
                if adopting:
                    run = False
                    with trio.move_on_at(began + step.timeout / self.scale if step.timeout is not None else math.inf) as limit:
                        found = await self._adopt(adapter, request, keeper.add, classified)
                    if limit.cancelled_caught:
                        outcome = "timed_out"
                    elif found is NOT_STARTED:
                        # It never ran: run it now as this attempt, once the first pass is in.
                        await self._go.wait()
                        began = trio.current_time()
                        request = msgspec.structs.replace(request, start_clock=began)
                        absolute = run = True
                    elif found is None:
                        outcome, error = "interrupted", await self._orphaned(adapter, request)
                        absolute = True
                    else:
                        assert isinstance(found, AttemptResult)
                        result = found
                        ended_after = found.ended_after
                if run:
                    if step.timeout is not None:
                        with trio.move_on_at(began + step.timeout / self.scale) as limit:
                            result = await adapter.run(request, keeper.add)
                        if limit.cancelled_caught:
                            result = None
                            outcome = "timed_out"
                    else:
                        result = await adapter.run(request, keeper.add)
            if scope.cancelled_caught:
                result, outcome, error = None, "cancelled", None
        except Exception as e:  # noqa: BLE001 - an adapter error fails the attempt, not the deployment
            result, outcome, error = None, "failed", f"adapter error: {type(e).__name__}: {e}"
        finally:
            del self._scopes[(s, k)]
            del self._keepers[(s, k)]
            if classified is not None:
                classified()
        # The attempt ended when the adapter returned: for a timeout or a cancel, when
        # its work was really stopped (a process group that is slow to die keeps the
        # target busy, and a retry waits for it).
        ended = trio.current_time()
        if result is not None:
            outcome, exit_code, error = result.outcome, result.exit_code, result.error
            if result.ended_clock is not None:
                ended = result.ended_clock
        else:
            exit_code = None
            if outcome == "timed_out":
                error = f"ran longer than the timeout of {step.timeout:g}s"
            elif outcome == "cancelled":
                error = "the deployment was cancelled"
        if ended_after is not None:
            # Ended while no orchestrator watched: when its record says it did (never
            # after now; the main task keeps the log's times from going back).
            at = round(min(started_at + ended_after, self._clock()), 9)
        elif absolute:
            at = round((ended - self._t0) * self.scale, 9)
        else:
            at = round(started_at + (ended - began) * self.scale, 9)
        self._send.send_nowait(Completion(at, order, s, k, attempt, outcome, exit_code, error, keeper.rest()))

    async def _adopt(self, adapter, request: ExecutionRequest, output, classified):  # noqa: ANN001, ANN202
        """Ask the adapter what became of an attempt (engine/adapter.py, `adopt`)."""
        adopt = getattr(adapter, "adopt", None)
        target = request.target.name if request.target is not None else None
        note = self.on_adopted or (lambda how, step, target, attempt: None)
        try:
            if adopt is None:
                found = None  # it cannot know: interrupted, as before adapters kept records
            elif "running" in inspect.signature(adopt).parameters:

                def running() -> None:
                    note("running", request.step.name, target, request.attempt)
                    classified()

                found = await adopt(request, output, running=running)
            else:
                classified()  # it may wait for the attempt: do not hold the first pass for it
                found = await adopt(request, output)
        finally:
            classified()
        if found is NOT_STARTED:
            note("not started", request.step.name, target, request.attempt)
        elif found is None:
            note("unknown", request.step.name, target, request.attempt)
        elif found.ended_after is not None:
            note("finished", request.step.name, target, request.attempt)
        return found

    async def _orphaned(self, adapter, request: ExecutionRequest) -> str:  # noqa: ANN001
        """An attempt whose fate cannot be known: stop whatever may be left of it, so
        that its next attempt never overlaps it."""
        stop = getattr(adapter, "stop_orphans", None)
        if stop is not None:
            target = request.target.name if request.target is not None else None
            stopped = await stop(request.deployment, {(request.step.name, target, request.attempt)})
            if stopped and self.on_orphans is not None:
                self.on_orphans(stopped)
        return "the orchestrator stopped during this attempt, and its outcome was not recorded"
