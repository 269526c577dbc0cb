"""The scheduling core: SPEC §2 written once, as a sans-IO state machine.

Theory of operation
-------------------
A deployment's state is the fold of its events. `Core.apply(event)` folds one recorded
event (that is how a history is replayed or resumed); the command methods below decide
which events come next, and fold each one as they emit it, so a live deployment and a
replayed log pass through exactly the same transitions (`_on_*` methods). Nothing in
here reads a clock, sleeps, does I/O or draws a random number: time (`at`, `wall`) and
the outcomes of executions are inputs. Two drivers feed it: the simulator's virtual
clock (`simulator.sim`) and the trio runtime.

A driver's loop is always the same:

    events = core.begin(at)                      # deployment.started + the first pass
    loop:
        start every execution in core.take_starts()   (order, step, k, attempt)
        wait for completions (and core.next_wakeup() for retry delays)
        for each completion due now, in the order the executions started:
            core.finish(step, k, attempt, outcome, exit_code, error, at)
        core.advance(at)                         # one decision pass
    until core.done

The decision pass (`advance`)
-----------------------------
1. Retries whose delay has run out become pending again, in their old place.
2. Activation: ready steps (every prerequisite terminal) are taken in declaration order
   while fewer than `max_parallel_steps` are active. On activation the condition is
   checked against the error flag; a step that does not run is skipped, which is
   terminal at once and may make later steps ready in this same pass. A step whose
   roles match no target starts and succeeds at once.
3. Executions: active steps in activation order, each step's pending executions in
   target order. Window full: passed over. Lock or resources not free: *blocked*, and
   the execution reserves its target and its resources for the rest of the pass.
   Otherwise it starts.

Worked example (SPEC §2, "a waiting writer"): one target h1; steps r1 (shared, 6 s),
w (with-previous, exclusive, 2 s), r2 (with-previous, shared, 3 s).

    t=0  activation: r1, w, r2 all ready (same prerequisites: none) -> active, in order.
         r1@h1: window 0<10, h1 free            -> starts (h1: 1 reader)
         w@h1:  window ok, needs h1 free: no    -> blocked, reserves h1
         r2@h1: window ok, shared would fit beside r1, but h1 is reserved -> blocked
    t=6  r1 finishes (h1 free). Pass: w starts (h1 writer); r2 blocked by the writer.
    t=8  w finishes. Pass: r2 starts.
    t=11 r2 finishes; every step terminal -> deployment.finished. Makespan 11.

Without the reservation rule r2 would overtake the waiting writer at t=0 and w would
run 6-8 or later: readers could starve a writer forever. The rule makes the pass
work-conserving across targets (a blocked target never holds back the step's other
targets) while keeping priority on each contended target and resource.
"""

from __future__ import annotations

import heapq
from bisect import insort
from pathlib import PurePath
from collections.abc import Iterable

from engine.events import (
    AnyEvent,
    DeploymentOutcome,
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
from engine.plan import Plan, fan_out, plan_to_builtins

# Step states.
PENDING, ACTIVE, SKIPPED, SUCCEEDED, FAILED, CANCELLED = range(6)
STEP_STATE_NAMES = ("pending", "active", "skipped", "succeeded", "failed", "cancelled")
_OUTCOME_STATE = {"succeeded": SUCCEEDED, "failed": FAILED, "cancelled": CANCELLED}

# Execution states.
E_PENDING, E_RUNNING, E_RETRY, E_SUCCEEDED, E_FAILED, E_CANCELLED, E_DROPPED = range(7)

FAILURES = frozenset({"failed", "timed_out"})
SERVER = -1  # the "target" of a server step's one execution


class IllegalMove(Exception):
    """A command or event that the current state does not allow; nothing was changed."""


class Core:
    """The state of one deployment and the rules that move it (see the module docstring)."""

    def __init__(self, plan: Plan, deployment: str):
        self.plan = plan
        self.deployment = deployment
        policy = plan.policy
        self.max_steps = policy.max_parallel_steps
        self.fail_fast = policy.fail_fast

        steps = plan.steps
        n = len(steps)
        self.n_steps = n
        self.step_names = [s.name for s in steps]
        self.step_index = {s.name: i for i, s in enumerate(steps)}
        self.target_names = [t.name for t in plan.targets]
        resource_names = list(plan.resources)
        resource_index = {r: i for i, r in enumerate(resource_names)}
        self.resource_names = resource_names

        # Static tables, one entry per step.
        self.exec_targets: list[list[int]] = []  # local execution k -> target index (SERVER)
        self.exec_by_target: list[dict[str | None, int]] = []
        self.window: list[int] = []
        self.exclusive: list[bool] = []
        self.uses: list[tuple[tuple[int, int], ...]] = []
        self.retries: list[int] = []
        self.retry_delay: list[float] = []
        self.condition: list[str] = []
        for s, fanned in zip(steps, fan_out(plan), strict=True):
            tlist = fanned if s.roles else [SERVER]
            self.exec_targets.append(tlist)
            self.exec_by_target.append(
                {(self.target_names[t] if t != SERVER else None): k for k, t in enumerate(tlist)}
            )
            self.window.append(plan.window_of(s))
            self.exclusive.append(plan.isolation_of(s) == "exclusive")
            self.uses.append(tuple((resource_index[r], u) for r, u in s.uses.items()))
            self.retries.append(s.retries)
            self.retry_delay.append(s.retry_delay)
            self.condition.append(s.condition)

        # Prerequisites: either "every step before index k" (after-previous, and the
        # with-previous steps that copy it) or an explicit list (depends_on).
        prefix: list[int | None] = []
        explicit: list[list[int] | None] = []
        for i, s in enumerate(steps):
            if s.depends_on is not None:
                prefix.append(None)
                explicit.append([self.step_index[d] for d in s.depends_on])
            elif s.start == "with-previous" and i > 0:
                prefix.append(prefix[i - 1])
                explicit.append(explicit[i - 1])
            else:
                prefix.append(i)
                explicit.append(None)
        self.prereq_prefix = prefix
        self.prereq_explicit = explicit
        self._dependents: list[list[int]] = [[] for _ in range(n)]
        self._unmet = [0] * n
        for i, deps in enumerate(explicit):
            if deps is not None:
                for d in set(deps):
                    self._dependents[d].append(i)
                self._unmet[i] = len(set(deps))
        # Prefix steps in index order; their k never decreases with the index.
        self._prefix_queue = [(k, i) for i, k in enumerate(prefix) if k is not None]
        self._prefix_pos = 0
        self._frontier = 0  # every step with index < frontier is terminal
        self._ready: list[int] = [i for i, d in enumerate(explicit) if d is not None and self._unmet[i] == 0]
        heapq.heapify(self._ready)

        # Dynamic state.
        self.seq = 0
        self.started = False
        self.done = False
        self.outcome: str | None = None
        self.error = False
        self.cancelling = False
        self.step_state = [PENDING] * n
        self.active: list[int] = []  # in activation order
        self.running = [0] * n
        self.pending: list[list[int]] = [[] for _ in range(n)]
        self.head = [0] * n  # pending[s][head[s]:] are the pending executions, sorted
        self.remaining = [0] * n  # executions not yet terminal
        self.stopped = [False] * n  # starts no more executions
        self.step_failed = [False] * n
        self.step_cut = [False] * n  # some execution was cancelled or never started
        self.terminal_count = 0
        self.exec_state: list[list[int]] = [[E_PENDING] * len(t) for t in self.exec_targets]
        self.attempts: list[list[int]] = [[0] * len(t) for t in self.exec_targets]
        self.failures: list[list[int]] = [[0] * len(t) for t in self.exec_targets]
        self.start_order: list[list[int]] = [[0] * len(t) for t in self.exec_targets]
        self.writer = [False] * len(self.target_names)
        self.readers = [0] * len(self.target_names)
        self.free = [plan.resources[r] for r in resource_names]
        self._timers: list[tuple[float, int, int, int, int]] = []  # (due, order, step, k, attempt)
        self._starts: list[tuple[int, int, int, int]] = []  # (order, step, k, attempt)
        self._out: list[Event] = []
        self.finished_event: DeploymentFinished | None = None
        self._wall: str | None = None
        self._advance_prefix()

    # ------------------------------------------------------------------ commands

    def begin(self, at: float = 0.0, wall: str | None = None, options: dict | None = None) -> list[Event]:
        """Start the deployment: `deployment.started`, then the first decision pass.
        `options` (how it is being run) is recorded for a later resume."""
        if self.started:
            raise IllegalMove("the deployment has already started")
        self._wall = wall
        plan = plan_to_builtins(self.plan)
        self._emit_deployment_started(
            DeploymentStarted(
                deployment=self.deployment,
                seq=self.seq + 1,
                at=at,
                wall=wall,
                scenario=self.plan.name or (PurePath(self.plan.source).stem if self.plan.source else None),
                plan=plan,
                policy=plan["policy"],
                options=options or {},
            )
        )
        return self.advance(at, wall)

    def finish(
        self,
        step: int,
        k: int,
        attempt: int,
        outcome: str,
        at: float,
        exit_code: int | None = None,
        error: str | None = None,
        wall: str | None = None,
    ) -> list[Event]:
        """An attempt ended. Emits `execution.finished`, and `step.finished` /
        `deployment.finished` if that was the last thing they waited for. Does not run a
        pass: apply every completion due at this instant, then call `advance`."""
        if self.exec_state[step][k] != E_RUNNING or self.attempts[step][k] != attempt:
            raise IllegalMove(f"{self._describe(step, k)} attempt {attempt} is not running")
        self._wall = wall
        t = self.exec_targets[step][k]
        self.seq += 1
        ev = ExecutionFinished(
            deployment=self.deployment,
            seq=self.seq,
            at=at,
            wall=wall,
            step=self.step_names[step],
            target=self.target_names[t] if t != SERVER else None,
            attempt=attempt,
            outcome=outcome,  # type: ignore[arg-type]
            exit_code=exit_code,
            error=error,
        )
        out = self._out
        out.append(ev)
        self._on_execution_finished(step, k, outcome, at)
        # Usually only this step can have ended; a fail_fast stop may have ended others.
        if (self.fail_fast and self.error) or self.cancelling:
            self._settle(at)
        elif self.running[step] == 0 and (self.remaining[step] == 0 or self.stopped[step]):
            self._settle(at, step)
        self._out = []
        return out

    def advance(self, at: float, wall: str | None = None) -> list[Event]:
        """One decision pass at time `at` (see the module docstring)."""
        if not self.started or self.done:
            return self._flush()
        self._wall = wall
        timers = self._timers
        while timers and timers[0][0] <= at:
            _, _, s, k, attempt = heapq.heappop(timers)
            if self.exec_state[s][k] == E_RETRY and self.attempts[s][k] == attempt:
                self.exec_state[s][k] = E_PENDING
                insort(self.pending[s], k, lo=self.head[s])
        if not self.cancelling:
            if self._ready:
                self._activate(at)
            self._start_executions(at)
        # A pass ends no step by itself (skips and empty steps end as they are activated),
        # but those may have been the last ones: then the deployment is over.
        if self.terminal_count == self.n_steps and not self.done:
            self._settle(at)
        out = self._out
        self._out = []
        return out

    def cancel(self, at: float, wall: str | None = None) -> list[Event]:
        """Cancel the deployment: nothing new starts; the driver must cancel every running
        execution (`running_executions()`) and report each as `cancelled` via `finish`."""
        if self.done or self.cancelling:
            return self._flush()
        self._wall = wall
        self.cancelling = True
        for s in range(self.n_steps):
            if self.step_state[s] == ACTIVE:
                self._stop_step(s)
        for s in range(self.n_steps):
            if self.step_state[s] == PENDING:
                self._emit_step_finished(s, "cancelled", at)
        self._settle(at)
        return self._flush()

    def interrupt_running(self, at: float, wall: str | None = None) -> list[Event]:
        """On resume after a crash: every execution that started and never finished is
        recorded `interrupted`; it will run again as a new attempt."""
        out: list[Event] = []
        for s, k, attempt in self.running_executions():
            out += self.finish(s, k, attempt, "interrupted", at, error="the orchestrator stopped during this attempt", wall=wall)
        return out

    def take_starts(self) -> list[tuple[int, int, int, int]]:
        """Executions started since the last call: (order, step, k, attempt); `order` is
        the seq of their `execution.started`, the tie-break for simultaneous events."""
        starts = self._starts
        self._starts = []
        return starts

    def next_wakeup(self) -> float | None:
        """The earliest time a retry delay runs out, if any (the driver must pass then)."""
        timers = self._timers
        while timers:
            _, _, s, k, attempt = timers[0]
            if self.exec_state[s][k] == E_RETRY and self.attempts[s][k] == attempt:
                break
            heapq.heappop(timers)  # stale: the execution was dropped or restarted
        return timers[0][0] if timers else None

    def running_executions(self) -> list[tuple[int, int, int]]:
        """(step, k, attempt) of every running execution, in start order."""
        out = []
        for s in self.active:
            if self.running[s]:
                for k, st in enumerate(self.exec_state[s]):
                    if st == E_RUNNING:
                        out.append((self.start_order[s][k], s, k, self.attempts[s][k]))
        out.sort()
        return [(s, k, a) for _, s, k, a in out]

    # ------------------------------------------------------------------ the fold

    def apply(self, event: AnyEvent) -> None:
        """Fold one recorded event into the state (replay / resume)."""
        if event.seq != self.seq + 1:
            raise IllegalMove(f"event seq {event.seq} does not follow {self.seq}")
        if event.deployment != self.deployment:
            raise IllegalMove(f"event of deployment {event.deployment!r} folded into {self.deployment!r}")
        self.seq = event.seq
        match event:
            case DeploymentStarted():
                if self.started:
                    raise IllegalMove("deployment.started twice")
                self.started = True
            case StepStarted(step=name):
                self._on_step_started(self._step(name))
            case StepSkipped(step=name):
                self._on_step_skipped(self._step(name))
            case ExecutionStarted(step=name, target=target, attempt=attempt):
                s, k = self._execution(name, target)
                st = self.exec_state[s][k]
                if self.step_state[s] != ACTIVE or self.stopped[s] or st not in (E_PENDING, E_RETRY):
                    raise IllegalMove(f"{self._describe(s, k)} started while not pending")
                if attempt != self.attempts[s][k] + 1:
                    raise IllegalMove(f"{self._describe(s, k)} started attempt {attempt} after {self.attempts[s][k]}")
                if st == E_PENDING:
                    self.pending[s].remove(k)
                self._on_execution_started(s, k, attempt)
            case ExecutionFinished(step=name, target=target, attempt=attempt, outcome=outcome, at=at):
                s, k = self._execution(name, target)
                if self.exec_state[s][k] != E_RUNNING or self.attempts[s][k] != attempt:
                    raise IllegalMove(f"{self._describe(s, k)} attempt {attempt} finished while not running")
                self._on_execution_finished(s, k, outcome, at)
            case StepFinished(step=name, outcome=outcome):
                self._on_step_finished(self._step(name), outcome)
            case DeploymentFinished(outcome=outcome):
                self.finished_event = event
                self.done = True
                self.outcome = outcome
            case DeploymentResumed():
                pass  # who runs the deployment, not what it does
            case _:
                raise IllegalMove(f"unknown event {event!r}")

    def fold(self, events: Iterable[AnyEvent]) -> Core:
        for ev in events:
            self.apply(ev)
        return self

    def _step(self, name: str) -> int:
        try:
            return self.step_index[name]
        except KeyError:
            raise IllegalMove(f"no step named {name!r} in the plan") from None

    def _execution(self, name: str, target: str | None) -> tuple[int, int]:
        s = self._step(name)
        try:
            return s, self.exec_by_target[s][target]
        except KeyError:
            raise IllegalMove(f"step {name!r} has no execution on target {target!r}") from None

    def _describe(self, s: int, k: int) -> str:
        t = self.exec_targets[s][k]
        return f"step {self.step_names[s]!r} on {self.target_names[t] if t != SERVER else 'the server'}"

    # Transitions. Each is the single place where its rule lives; emitting and folding
    # both come through here.

    def _on_step_started(self, s: int) -> None:
        self.step_state[s] = ACTIVE
        self.active.append(s)
        n = len(self.exec_targets[s])  # 0 when the roles match no target
        self.pending[s] = list(range(n))
        self.remaining[s] = n

    def _on_step_skipped(self, s: int) -> None:
        self.step_state[s] = SKIPPED
        self._terminal(s)

    def _on_execution_started(self, s: int, k: int, attempt: int) -> None:
        # The caller has taken k out of the pending list (the pass does it in bulk).
        self.exec_state[s][k] = E_RUNNING
        self.attempts[s][k] = attempt
        self.start_order[s][k] = self.seq
        self.running[s] += 1
        t = self.exec_targets[s][k]
        if t != SERVER:
            if self.exclusive[s]:
                self.writer[t] = True
            else:
                self.readers[t] += 1
        for r, u in self.uses[s]:
            self.free[r] -= u

    def _on_execution_finished(self, s: int, k: int, outcome: str, at: float) -> None:
        self.running[s] -= 1
        t = self.exec_targets[s][k]
        if t != SERVER:
            if self.exclusive[s]:
                self.writer[t] = False
            else:
                self.readers[t] -= 1
        for r, u in self.uses[s]:
            self.free[r] += u
        states = self.exec_state[s]
        if outcome == "succeeded":
            states[k] = E_SUCCEEDED
            self.remaining[s] -= 1
        elif outcome == "interrupted":
            # Not the execution's fault: it runs again at once, no retry used up.
            if self.stopped[s]:
                states[k] = E_DROPPED
                self.remaining[s] -= 1
                self.step_cut[s] = True
            else:
                states[k] = E_PENDING
                insort(self.pending[s], k, lo=self.head[s])
        elif outcome == "cancelled":
            states[k] = E_CANCELLED
            self.remaining[s] -= 1
            self.step_cut[s] = True
        else:  # failed, timed_out
            self.failures[s][k] += 1
            if self.failures[s][k] <= self.retries[s] and not self.stopped[s]:
                delay = self.retry_delay[s]
                if delay > 0:
                    states[k] = E_RETRY
                    heapq.heappush(self._timers, (at + delay, self.start_order[s][k], s, k, self.attempts[s][k]))
                else:
                    states[k] = E_PENDING
                    insort(self.pending[s], k, lo=self.head[s])
            else:
                # Failed for good: the error flag is set and the step starts nothing more.
                states[k] = E_FAILED
                self.remaining[s] -= 1
                self.step_failed[s] = True
                self.error = True
                self._stop_step(s)
                if self.fail_fast:
                    for a in self.active:
                        self._stop_step(a)

    def _stop_step(self, s: int) -> None:
        """The step starts no more executions; those not yet started are dropped."""
        if self.stopped[s]:
            return
        self.stopped[s] = True
        states = self.exec_state[s]
        dropped = 0
        for k, st in enumerate(states):
            if st == E_PENDING or st == E_RETRY:
                states[k] = E_DROPPED
                dropped += 1
        if dropped:
            self.remaining[s] -= dropped
            self.step_cut[s] = True  # outcome cancelled, unless the step failed
        self.pending[s] = []
        self.head[s] = 0

    def _on_step_finished(self, s: int, outcome: str) -> None:
        if self.step_state[s] == ACTIVE:
            self.active.remove(s)
        self.step_state[s] = _OUTCOME_STATE[outcome]
        self._terminal(s)

    def _terminal(self, s: int) -> None:
        self.terminal_count += 1
        for d in self._dependents[s]:
            self._unmet[d] -= 1
            if self._unmet[d] == 0:
                heapq.heappush(self._ready, d)
        self._advance_prefix()

    def _advance_prefix(self) -> None:
        state = self.step_state
        f = self._frontier
        n = self.n_steps
        while f < n and state[f] >= SKIPPED:
            f += 1
        self._frontier = f
        q = self._prefix_queue
        p = self._prefix_pos
        while p < len(q) and q[p][0] <= f:
            heapq.heappush(self._ready, q[p][1])
            p += 1
        self._prefix_pos = p

    # ------------------------------------------------------------------ decisions

    def _activate(self, at: float) -> None:
        ready = self._ready
        state = self.step_state
        while ready and len(self.active) < self.max_steps:
            s = heapq.heappop(ready)
            if state[s] != PENDING:
                continue
            cond = self.condition[s]
            if cond == "success" and self.error:
                self._emit_step_skipped(s, "condition 'success': an earlier execution failed", at)
            elif cond == "failure" and not self.error:
                self._emit_step_skipped(s, "condition 'failure': nothing has failed", at)
            else:
                self._emit_step_started(s, at)
                if self.remaining[s] == 0:  # roles that match no target
                    self._emit_step_finished(s, "succeeded", at)

    def _start_executions(self, at: float) -> None:
        reserved_targets: set[int] = set()
        reserved_resources: set[int] = set()
        writer = self.writer
        readers = self.readers
        free = self.free
        running = self.running
        heads = self.head
        windows = self.window
        stopped = self.stopped
        pending = self.pending
        # The active list does not change during this part of the pass.
        for s in self.active:
            window = windows[s]
            if running[s] >= window or stopped[s]:
                continue  # window full: passed over, reserves nothing
            pend = pending[s]
            i = heads[s]
            n = len(pend)
            if i >= n:
                continue
            targets = self.exec_targets[s]
            exclusive = self.exclusive[s]
            uses = self.uses[s]
            blocked: list[int] = []
            while i < n and running[s] < window:
                k = pend[i]
                i += 1
                t = targets[k]
                ok = True
                if t != SERVER and (t in reserved_targets or writer[t] or (exclusive and readers[t])):
                    ok = False
                if ok and uses:
                    for r, u in uses:
                        if r in reserved_resources or free[r] < u:
                            ok = False
                            break
                if ok:
                    self._emit_execution_started(s, k, at)
                    continue
                # Blocked: it keeps its place and reserves what it waits for.
                blocked.append(k)
                if t != SERVER:
                    reserved_targets.add(t)
                for r, _ in uses:
                    reserved_resources.add(r)
            # pend[head:i] has been visited: the started ones leave, the blocked ones go
            # back just before the unvisited rest, still in target order.
            h = i - len(blocked)
            if blocked:
                pend[h:i] = blocked
            heads[s] = h

    def _settle(self, at: float, only: int | None = None) -> None:
        """Finish every active step (or just `only`) that has nothing left to run, then
        the deployment once every step is terminal."""
        for s in list(self.active) if only is None else [only]:
            if self.step_state[s] == ACTIVE and self.running[s] == 0 and (self.remaining[s] == 0 or self.stopped[s]):
                if self.step_failed[s]:
                    outcome = "failed"
                elif self.step_cut[s] or self.cancelling:
                    outcome = "cancelled"
                else:
                    outcome = "succeeded"
                self._emit_step_finished(s, outcome, at)
        if not self.done and self.started and self.terminal_count == self.n_steps:
            ending: DeploymentOutcome = "cancelled" if self.cancelling else "failed" if self.error else "succeeded"
            self.seq += 1
            ev = DeploymentFinished(deployment=self.deployment, seq=self.seq, at=at, wall=self._wall, outcome=ending)
            self._out.append(ev)
            self.finished_event = ev
            self.done = True
            self.outcome = ending

    # ------------------------------------------------------------------ emitting

    def _emit_deployment_started(self, ev: DeploymentStarted) -> None:
        self.seq += 1
        self._out.append(ev)
        self.started = True

    def _emit_step_started(self, s: int, at: float) -> None:
        self.seq += 1
        self._out.append(StepStarted(deployment=self.deployment, seq=self.seq, at=at, wall=self._wall, step=self.step_names[s]))
        self._on_step_started(s)

    def _emit_step_skipped(self, s: int, reason: str, at: float) -> None:
        self.seq += 1
        self._out.append(
            StepSkipped(deployment=self.deployment, seq=self.seq, at=at, wall=self._wall, step=self.step_names[s], reason=reason)
        )
        self._on_step_skipped(s)

    def _emit_step_finished(self, s: int, outcome: str, at: float) -> None:
        self.seq += 1
        self._out.append(
            StepFinished(deployment=self.deployment, seq=self.seq, at=at, wall=self._wall, step=self.step_names[s], outcome=outcome)  # type: ignore[arg-type]
        )
        self._on_step_finished(s, outcome)

    def _emit_execution_started(self, s: int, k: int, at: float) -> None:
        self.seq = seq = self.seq + 1
        t = self.exec_targets[s][k]
        attempt = self.attempts[s][k] + 1
        self._out.append(
            ExecutionStarted(
                deployment=self.deployment,
                seq=seq,
                at=at,
                wall=self._wall,
                step=self.step_names[s],
                target=self.target_names[t] if t != SERVER else None,
                attempt=attempt,
            )
        )
        self._on_execution_started(s, k, attempt)
        self._starts.append((seq, s, k, attempt))

    def _flush(self) -> list[Event]:
        out = self._out
        self._out = []
        return out
