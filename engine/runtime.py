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
Ctrl-C or SIGTERM (with `handle_signals=True`) cancels: nothing new starts, running
executions are cancelled through their adapters, and the log ends `cancelled`.
Resuming a log with executions that never finished, the adapters first stop what the
dead orchestrator left running (`stop_orphans`), then those executions are recorded
`interrupted` and run again.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import trio

from engine.adapter import AdapterFor, AttemptResult, ExecutionRequest
from engine.core import SERVER, Core
from engine.events import Event
from engine.store import EventStore, OutputLine

INSTANT = 1e-9  # seconds of deployment time that count as one instant
MAX_OUTPUT_LINES = 2000  # per attempt; the rest is counted, not kept
MAX_LINE_CHARS = 4000


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Completion:
    __slots__ = ("at", "order", "step", "k", "attempt", "outcome", "exit_code", "error", "lines")

    def __init__(self, at, order, step, k, attempt, outcome, exit_code, error, lines):  # noqa: ANN001
        self.at, self.order, self.step, self.k, self.attempt = at, order, step, k, attempt
        self.outcome, self.exit_code, self.error, self.lines = outcome, exit_code, error, lines


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
    ):
        """`resume_at`: the `at` this run starts from (0 for a new deployment; on resume,
        where the log left off)."""
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
        self._t0 = 0.0
        self._last_at = resume_at
        self._instant = resume_at  # when the current batch's instant began
        self._scopes: dict[tuple[int, int], trio.CancelScope] = {}
        self._wait_scope: trio.CancelScope | None = None
        self._cancel_requested = False
        self._send, self._recv = trio.open_memory_channel[Completion](math.inf)
        self._nursery: trio.Nursery | None = None

    # --------------------------------------------------------------------- the loop

    async def run(self, handle_signals: bool = False) -> str:
        """Run (or resume) the deployment to its end; return its outcome."""
        core = self.core
        self._t0 = trio.current_time() - self.resume_at / self.scale
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if handle_signals:
                nursery.start_soon(self._watch_signals)
            now, wall = self._now(), self.wall_clock()
            if not core.started:
                await self._commit(core.begin(now, wall, self.options))
            else:
                interrupted = core.running_executions()
                if interrupted:
                    await self._stop_orphans(interrupted)
                    now, wall = self._now(), self.wall_clock()
                await self._commit(core.interrupt_running(now, wall) + core.advance(now, wall))
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
            nursery.cancel_scope.cancel()  # the signal watcher, if any
        assert core.outcome is not None
        return core.outcome

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

    def _now(self) -> float:
        now = max(round((trio.current_time() - self._t0) * self.scale, 9), self._last_at)
        self._last_at = now
        return now

    async def _commit(self, events: list[Event], lines: list[OutputLine] | None = None) -> None:
        """Persist first: nothing the events name happens before they are stored.

        A store that blocks (a SQLite file) writes in a worker thread: meanwhile the other
        tasks go on, and whatever completes waits for the next batch, so a busy
        deployment commits in bigger batches by itself (group commit)."""
        if not events and not lines:
            return
        store = self.store

        def write() -> None:
            if lines:
                store.add_output(lines)
            if events:
                store.append(events)

        if self.threaded_writes and getattr(store, "blocking", False):
            await trio.to_thread.run_sync(write)
        else:
            write()
        if events and self.on_events is not None:
            self.on_events(events)

    def _launch(self) -> None:
        assert self._nursery is not None
        started_at = self._last_at  # the instant of the pass that started them
        for order, s, k, attempt in self.core.take_starts():
            self._nursery.start_soon(self._execute, order, s, k, attempt, started_at)

    async def _stop_orphans(self, interrupted: list[tuple[int, int, int]]) -> None:
        """Resuming after a crash: what the dead orchestrator started of the `interrupted`
        executions (step, k, attempt) may still run. Every adapter that can stops it
        first (see engine/adapter.py)."""
        core = self.core
        attempts: set[tuple[str, str | None, int]] = set()
        for s, k, attempt in interrupted:
            t = core.exec_targets[s][k]
            attempts.add((core.step_names[s], core.target_names[t] if t != SERVER else None, attempt))
        asked: list[object] = []
        for target in (*core.plan.targets, None):
            adapter = self.adapter_for(target)
            stop = getattr(adapter, "stop_orphans", None)
            if stop is None or any(a is adapter for a in asked):
                continue
            asked.append(adapter)
            stopped = await stop(core.deployment, attempts)
            if stopped and self.on_orphans is not None:
                self.on_orphans(stopped)

    # ----------------------------------------------------------------- cancellation

    def cancel(self) -> None:
        """Ask for the deployment to be cancelled (idempotent). The main task records it,
        commits, and then cancels the running executions: only it touches the core."""
        self._cancel_requested = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()  # wake the loop now

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                self.cancel()

    # -------------------------------------------------------------------- executions

    async def _execute(self, order: int, s: int, k: int, attempt: int, started_at: float) -> None:
        # Measured from the instant the pass decided it (on the trio clock), so the
        # time it takes to get going is part of the attempt, not a drift of the clock.
        began = self._t0 + started_at / self.scale
        core = self.core
        plan = core.plan
        step = plan.steps[s]
        t = core.exec_targets[s][k]
        target = plan.targets[t] if t != SERVER else None
        request = ExecutionRequest(
            deployment=core.deployment, step=step, target=target, attempt=attempt, workdir=self.workdir, start_clock=began
        )
        lines: list[OutputLine] = []
        dropped = 0
        target_name = target.name if target is not None else None

        def keep(text: str) -> None:
            lines.append(OutputLine(core.deployment, step.name, target_name, attempt, len(lines) + 1, text[:MAX_LINE_CHARS]))

        def output(line: str) -> None:
            nonlocal dropped
            if len(lines) < MAX_OUTPUT_LINES:
                keep(line)
            else:
                dropped += 1

        scope = trio.CancelScope()
        self._scopes[(s, k)] = scope
        result: AttemptResult | None = None
        outcome = "failed"
        try:
            with scope:
                adapter = self.adapter_for(target)
                if step.timeout is not None:
                    with trio.move_on_at(began + step.timeout / self.scale) as limit:
                        result = await adapter.run(request, output)
                    if limit.cancelled_caught:
                        result = None
                        outcome = "timed_out"
                else:
                    result = await adapter.run(request, output)
            if scope.cancelled_caught:
                result, outcome = None, "cancelled"
            error = None
        except Exception as e:  # noqa: BLE001 - an adapter error fails the attempt, not the deployment
            result, outcome, error = None, "failed", f"adapter error: {type(e).__name__}: {e}"
        finally:
            del self._scopes[(s, k)]
        if dropped:
            keep(f"[abreast: {dropped} more lines of output were not kept]")
        ended = trio.current_time()
        if result is not None:
            outcome, exit_code, error = result.outcome, result.exit_code, result.error
            if result.ended_clock is not None:
                ended = result.ended_clock
        else:
            exit_code = None
            if outcome == "timed_out":
                error = f"ran longer than the timeout of {step.timeout:g}s"
                ended = began + step.timeout / self.scale
            elif outcome == "cancelled":
                error = "the deployment was cancelled"
        at = round(started_at + (ended - began) * self.scale, 9)
        self._send.send_nowait(Completion(at, order, s, k, attempt, outcome, exit_code, error, lines))

