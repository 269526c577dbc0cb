"""What holds a deployment back: a lower bound on its makespan, and its critical path.

Both read a finished deployment's event log (simulated or real) and its plan.

Lower bound. No schedule of the work this run did can finish sooner than any of:
- the longest chain of prerequisites, each step weighing its longest execution (its
  attempts back to back, with the retry delays between them);
- the busiest target's exclusive work (an exclusive attempt has its target alone);
- each resource's unit-seconds divided by its capacity;
- each step's work divided by its window.
The bound is the largest of these, and we say which one it is.

Critical path. Walking back from the attempt that ended last: why did it start when it
did? Its step was activated then (and why: a prerequisite ended, or a step slot came
free), or something it waited for ended then (the lock on its target, a place in its
step's window, a resource), or its retry delay ran out. Each link is an execution or a
wait, with its cause; together they cover [0, makespan] without gaps or overlaps, so
their durations add up to the makespan.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from operator import attrgetter

import msgspec

from engine.core import Core
from engine.plan import Plan
from engine.report import ExecutionRow, Report

EPS = 1e-9


class Bound(msgspec.Struct, frozen=True):
    value: float
    kind: str  # chain | target | resource | window
    detail: str


class Link(msgspec.Struct, frozen=True):
    kind: str  # execution | wait
    start: float
    end: float
    cause: str
    step: str | None = None
    target: str | None = None
    attempt: int | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start


def analyse(plan: Plan, report: Report) -> tuple[Bound, list[Bound], list[Link]]:
    """Both at once, reading the report once: (best bound, every bound, critical path)."""
    log = _Log(plan, report)
    bound, bounds = lower_bound(plan, report, log)
    return bound, bounds, critical_path(plan, report, log)


class _Log:
    """The parts of a finished deployment the analysis needs, indexed: its report's
    attempts (ExecutionRow: step, target, attempt, start, end, outcome) and step times."""

    def __init__(self, plan: Plan, report: Report):
        self.plan = plan
        self.core = Core(plan, "analysis")  # for the prerequisite tables only
        index = self.core.step_index
        self.index = index
        self.activated: dict[int, float] = {}
        self.terminal: dict[int, float] = {}
        self.skipped: set[int] = set()
        for row in report.steps.values():
            s = index[row.name]
            if row.outcome == "skipped":
                self.skipped.add(s)
            if row.decided is not None:
                self.activated[s] = row.decided
            if row.end is not None:
                self.terminal[s] = row.end
            elif row.outcome == "skipped" and row.decided is not None:
                self.terminal[s] = row.decided
        self.rows = report.rows
        self.attempts = [a for a in report.rows if a.end is not None]
        self.makespan = report.makespan if report.makespan is not None else max((a.end for a in self.attempts), default=0.0)
        # Only executions that were retried need their attempts side by side.
        retried = {(a.step, a.target) for a in self.attempts if a.attempt > 1}
        self.by_execution: dict[tuple[str, str | None], list] = defaultdict(list)
        if retried:
            for a in self.attempts:
                if (a.step, a.target) in retried:
                    self.by_execution[(a.step, a.target)].append(a)
        self._position: dict[int, int] | None = None

    def started_before(self, c: ExecutionRow, a: ExecutionRow) -> bool:
        """Whether attempt c started before attempt a (in start order: at one instant,
        the one whose `execution.started` came first; rows are kept in that order)."""
        if c.start < a.start - EPS:
            return True
        if c.start > a.start + EPS:
            return False
        if self._position is None:  # only zero-length attempts get here: built once, when needed
            self._position = {id(x): i for i, x in enumerate(self.rows)}
        return self._position[id(c)] < self._position[id(a)]


# --- the lower bound ---------------------------------------------------------------------


def lower_bound(plan: Plan, report: Report, log: _Log | None = None) -> tuple[Bound, list[Bound]]:
    """The best lower bound on the makespan and every candidate, largest first."""
    log = log or _Log(plan, report)
    index = log.index
    steps = plan.steps
    n = len(steps)
    # One sweep over the attempts: each step's longest single attempt, its total work,
    # each target's exclusive work and each resource's unit-seconds.
    weight = [0.0] * n
    step_work = [0.0] * n
    exclusive: dict[str, float] = defaultdict(float)
    resource: dict[str, float] = defaultdict(float)
    is_exclusive = [plan.isolation_of(st) == "exclusive" for st in steps]
    uses = [list(st.uses.items()) for st in steps]
    retried = log.by_execution
    for a in log.attempts:
        s = index[a.step]
        d = a.end - a.start
        step_work[s] += d
        if d > weight[s] and (not retried or (a.step, a.target) not in retried):
            weight[s] = d
        if is_exclusive[s] and a.target is not None:
            exclusive[a.target] += d
        if uses[s]:
            for r, units in uses[s]:
                resource[r] += units * d
    # A retried execution weighs its attempts back to back, with the delays between.
    for (name, _), attempts in log.by_execution.items():
        s = index[name]
        span = sum(a.end - a.start for a in attempts) + steps[s].retry_delay * (len(attempts) - 1)
        weight[s] = max(weight[s], span)
    # Longest chain: prerequisites come earlier in the file, so one forward sweep. A
    # barrier's prerequisites are "every step before k": keep a running best for those.
    longest = [0.0] * n
    via: list[int | None] = [None] * n
    prefix_best: list[tuple[float, int | None]] = [(0.0, None)]  # best over steps < k
    for s in range(n):
        explicit = log.core.prereq_explicit[s]
        if explicit is None:
            best, best_p = prefix_best[log.core.prereq_prefix[s] or 0]
        else:
            best, best_p = 0.0, None
            for p in explicit:
                if longest[p] > best:
                    best, best_p = longest[p], p
        longest[s] = best + weight[s]
        via[s] = best_p
        prev = prefix_best[-1]
        prefix_best.append((longest[s], s) if longest[s] > prev[0] else prev)
    candidates: list[Bound] = []
    if n:
        end = max(range(n), key=lambda s: (longest[s], -s))
        chain = []
        s: int | None = end
        while s is not None:
            if weight[s] > 0 or not chain:
                chain.append(steps[s].name)
            s = via[s]
        chain.reverse()
        if len(chain) > 8:
            chain = [*chain[:3], f"… {len(chain) - 6} more …", *chain[-3:]]
        candidates.append(Bound(round(longest[end], 9), "chain", " → ".join(chain)))
    if exclusive:
        t = max(exclusive, key=lambda k: exclusive[k])
        candidates.append(Bound(round(exclusive[t], 9), "target", f"{t}: exclusive work"))
    for r, unit_seconds in resource.items():
        candidates.append(Bound(round(unit_seconds / plan.resources[r], 9), "resource", f"{r}: {unit_seconds:g} unit-seconds / capacity {plan.resources[r]}"))
    for s in range(n):
        if step_work[s] > 0:
            w = plan.window_of(steps[s])
            candidates.append(Bound(round(step_work[s] / w, 9), "window", f"{steps[s].name}: {step_work[s]:g}s of work / window {w}"))
    candidates.sort(key=lambda b: -b.value)
    best = candidates[0] if candidates else Bound(0.0, "chain", "nothing to run")
    return best, candidates


# --- the critical path -----------------------------------------------------------------------


def critical_path(plan: Plan, report: Report, log: _Log | None = None) -> list[Link]:
    """The chain of executions and waits that ends at the makespan (see the docstring)."""
    log = log or _Log(plan, report)
    ended_at = _EndIndex(log.attempts)
    log.ended_at = ended_at
    terminal_at = _terminal_at(log)

    links: list[Link] = []  # backwards
    if not log.attempts:
        return [Link("wait", 0.0, log.makespan, "nothing ran")] if log.makespan > 0 else []
    last = ended_at.last()
    cur: ExecutionRow | int | None = last  # an attempt, or a step index (its activation)
    seen: set[int] = set()
    while cur is not None:
        # Every link goes back in time or to an earlier step; should two things at one
        # instant point at each other, stop rather than loop (the gap is then marked).
        key = id(cur) if isinstance(cur, ExecutionRow) else -1 - cur
        if key in seen:
            break
        seen.add(key)
        if isinstance(cur, ExecutionRow):
            a = cur
            cause, nxt, wait = _why_started(a, log, ended_at)
            links.append(Link("execution", a.start, a.end, cause, a.step, a.target, a.attempt))
            if wait is not None:
                links.append(wait)
            cur = nxt
        else:
            s = cur
            at = log.activated.get(s, 0.0)
            if at <= EPS:
                break
            cause_link, nxt = _why_activated(s, at, log, ended_at, terminal_at)
            if cause_link is not None:
                links.append(cause_link)
            cur = nxt
    links.reverse()
    return _contiguous(_fold_activations(links), log.makespan)


def _terminal_at(log: _Log) -> dict[float, list[int]]:
    """The steps that became terminal at each instant."""
    terminal_at: dict[float, list[int]] = defaultdict(list)
    for s, t in log.terminal.items():
        terminal_at[round(t, 9)].append(s)
    return terminal_at


def _fold_activations(links: list[Link]) -> list[Link]:
    """Say why a step's first execution started: the activation's own reason."""
    out: list[Link] = []
    for link in links:
        marker = out[-1] if out else None
        if (
            link.kind == "execution"
            and link.cause == f"step {link.step} activated"
            and marker is not None
            and marker.kind == "wait"
            and marker.duration <= EPS
            and marker.step == link.step
        ):
            out[-1] = msgspec.structs.replace(link, cause=marker.cause.split(": ", 1)[-1])
        else:
            out.append(link)
    if out and out[0].kind == "execution" and out[0].start <= EPS and out[0].cause == f"step {out[0].step} activated":
        out[0] = msgspec.structs.replace(out[0], cause="started with the deployment")
    return out


class _EndIndex:
    """The attempts that ended at a given instant (within EPS), by bisection over the
    attempts sorted by end: no million-entry dict for one walk back in time."""

    def __init__(self, attempts: list[ExecutionRow]):
        self.rows = sorted(attempts, key=attrgetter("end"))
        self.ends = [a.end for a in self.rows]

    def last(self) -> ExecutionRow:
        """The attempt that ended last (of those ending together, the last to start)."""
        return max(self.get(self.ends[-1]), key=attrgetter("start"))

    def get(self, at: float, default: list | None = None) -> list[ExecutionRow]:
        i = bisect_left(self.ends, at - EPS)
        out = []
        while i < len(self.ends) and self.ends[i] <= at + EPS:
            out.append(self.rows[i])
            i += 1
        return out


def _why_started(a: ExecutionRow, log: _Log, ended_at: _EndIndex):  # noqa: ANN202
    """(cause, what to follow next, a wait link to add or None)."""
    plan = log.plan
    si = log.index[a.step]
    step = plan.steps[si]
    if a.attempt > 1:
        previous = log.by_execution[(a.step, a.target)][a.attempt - 2]
        due = previous.end + step.retry_delay
        if abs(a.start - due) <= EPS:
            if step.retry_delay > 0:
                wait = Link("wait", previous.end, a.start, f"retry delay of {step.retry_delay:g}s after attempt {previous.attempt} {previous.outcome}", a.step, a.target)
                return "retry delay ran out", previous, wait
            return f"retried at once after attempt {previous.attempt} {previous.outcome}", previous, None
    activated = log.activated.get(si, 0.0)
    if abs(a.start - activated) <= EPS and a.attempt == 1:
        return f"step {a.step} activated", si, None
    blocker, _, cause = _blocker(a, log, ended_at)
    if blocker is not None:
        return cause, blocker, None
    # Nothing that ended then explains it (it should not happen): wait from activation.
    return "started", si, Link("wait", activated, a.start, "waited in its step (cause not recorded)", a.step, a.target)


def _blocker(a: ExecutionRow, log: _Log, ended_at: _EndIndex) -> tuple[ExecutionRow | None, str, str]:
    """What attempt `a` waited for, as (the attempt whose end let it start, the kind of
    wait — lock, window, resource, priority — and the cause in words)."""
    plan = log.plan
    steps = plan.steps
    step = steps[log.index[a.step]]
    # Only what started before it can have held it back (a zero-length attempt that
    # started at the same instant, after it, did not).
    candidates = [c for c in ended_at.get(a.start) if c is not a and log.started_before(c, a)]
    if a.target is not None:
        for c in candidates:
            other = steps[log.index[c.step]]
            if c.target == a.target and (plan.isolation_of(step) == "exclusive" or plan.isolation_of(other) == "exclusive"):
                return c, "lock", f"waited for the lock on {a.target} held by {c.step}"
    for c in candidates:
        if c.step == a.step:
            return c, "window", f"waited for a place in {a.step}'s window ({plan.window_of(step)})"
    for c in candidates:
        shared = set(step.uses) & set(steps[log.index[c.step]].uses)
        if shared:
            return c, "resource", f"waited for {', '.join(sorted(shared))} held by {c.step}"
    if candidates:
        c = candidates[0]
        return c, "priority", f"waited behind a higher-priority execution until {c.step} ended"
    return None, "unrecorded", ""


def _why_activated(s: int, at: float, log: _Log, ended_at, terminal_at):  # noqa: ANN001, ANN202
    names = log.core.step_names

    def ranked(steps: list[int]) -> list[int]:
        # Prefer a step whose own execution ended then: that is the thing that ran.
        return sorted(steps, key=lambda p: (any(a.step == names[p] for a in ended_at_of(log, at)), p))

    kind, candidates = _activation(s, at, log, terminal_at)
    if kind == "prerequisite":
        p = ranked(candidates)[-1]
        return _enter(p, at, log, f"waited for prerequisite {names[p]}", s)
    if kind == "step slot":
        q = ranked(candidates)[-1]
        return _enter(q, at, log, f"waited for a step slot, freed when {names[q]} ended", s)
    return Link("wait", 0.0, at, f"step {names[s]} waited (cause not recorded)", names[s]), None


def _activation(s: int, at: float, log: _Log, terminal_at: dict[float, list[int]]) -> tuple[str, list[int]]:
    """Why step s was activated at `at`: ("prerequisite", the prerequisites that ended
    then), ("step slot", the steps whose end freed a slot then) or ("unrecorded", [])."""
    ended_then = terminal_at.get(round(at, 9), [])
    explicit = log.core.prereq_explicit[s]
    if explicit is None:
        limit = log.core.prereq_prefix[s] or 0
        prereqs = [p for p in ended_then if p < limit]
    else:
        prereqs = [p for p in ended_then if p in set(explicit)]
    if prereqs:
        return "prerequisite", prereqs
    # Otherwise a step slot came free: only a step active before this instant held one
    # (a skipped step never did; a step whose roles match nothing held it for no time).
    others = [q for q in ended_then if q != s and q not in log.skipped and log.activated.get(q, at) < at - EPS]
    if others:
        return "step slot", others
    return "unrecorded", []


def ended_at_of(log: _Log, at: float) -> list[ExecutionRow]:
    return log.ended_at.get(at)


def _enter(p: int, at: float, log: _Log, cause: str, s: int) -> tuple:
    """Follow step p, which ended at `at`: into its last attempt; or, if it was stopped
    then without one of its own ending (fail_fast), into the attempt that stopped it;
    or into its activation (a skipped or empty step)."""
    names = log.core.step_names
    marker = Link("wait", at, at, f"step {names[s]} activated: {cause}", names[s])
    ending = ended_at_of(log, at)
    own = [a for a in ending if a.step == names[p]]
    if own:
        return marker, max(own, key=lambda a: a.start)
    if p not in log.skipped and log.activated.get(p, at) < at - EPS:
        failed = [a for a in ending if a.outcome in ("failed", "timed_out")]
        if failed:
            stopper = max(failed, key=lambda a: a.start)
            marker = Link("wait", at, at, f"step {names[s]} activated: {cause} (stopped when {stopper.step} failed)", names[s])
            return marker, stopper
    return marker, p


def _contiguous(links: list[Link], makespan: float) -> list[Link]:
    """Fill any gap so the links cover [0, makespan] exactly (and say so)."""
    out: list[Link] = []
    t = 0.0
    for link in links:
        if link.start > t + EPS:
            out.append(Link("wait", t, link.start, "idle (no recorded cause)"))
        if link.end < t - EPS:
            continue  # a link that overlaps what is already covered
        out.append(link)
        t = max(t, link.end)
    if makespan > t + EPS:
        out.append(Link("wait", t, makespan, "steps without executions ended"))
    return out


# --- waits ---------------------------------------------------------------------------------


class Wait(msgspec.Struct, frozen=True):
    """A stretch of time before an attempt started, and what it waited for."""

    step: str
    target: str | None
    attempt: int  # the attempt that waited
    start: float
    end: float
    kind: str  # one of WAIT_KINDS
    cause: str


# step slot: its step was ready but max_parallel_steps were active; lock, window,
# resource: what ended when it started (as on the critical path); priority: a
# higher-priority execution had reserved what it needed; retry delay: after a failed
# attempt; unrecorded: nothing in the log explains it (a real run's own overhead).
WAIT_KINDS = ("step slot", "lock", "window", "resource", "priority", "retry delay", "unrecorded")


def waits(plan: Plan, report: Report, log: _Log | None = None) -> list[Wait]:
    """Every wait of every attempt, in the report's attempt order. An attempt waits from
    the moment it could have started — its step ready (every prerequisite terminal), or
    its previous attempt ended — until it started: first for a step slot (until its step
    was activated), or out its retry delay; then for whatever ended at the instant it
    started, the same answer the critical path gives (a wait is named after what it
    waited for last)."""
    log = log or _Log(plan, report)
    ended_at = _EndIndex(log.attempts)
    terminal_at = _terminal_at(log)
    names = log.core.step_names
    ready = _ready_times(log)
    retried = {(a.step, a.target) for a in report.rows if a.attempt > 1}
    earlier = {(a.step, a.target, a.attempt): a for a in report.rows if (a.step, a.target) in retried} if retried else {}
    out: list[Wait] = []
    for a in report.rows:
        s = log.index[a.step]
        if a.attempt == 1:
            since = log.activated.get(s, a.start)
            if since - ready[s] > EPS:
                kind, others = _activation(s, since, log, terminal_at)
                if kind == "step slot":
                    cause = f"waited for a step slot (max_parallel_steps {plan.policy.max_parallel_steps}), freed when {names[others[-1]]} ended"
                else:
                    kind, cause = "unrecorded", f"step {a.step} was ready but not activated (cause not recorded)"
                out.append(Wait(a.step, a.target, 1, ready[s], since, kind, cause))
        else:
            previous = earlier.get((a.step, a.target, a.attempt - 1))
            if previous is None or previous.end is None:
                continue
            delay = 0.0 if previous.outcome == "interrupted" else plan.steps[s].retry_delay
            since = round(previous.end + delay, 9)
            if delay > 0 and a.start - previous.end > EPS:
                cause = f"retry delay of {delay:g}s after attempt {previous.attempt} {previous.outcome}"
                # Ends when the attempt started if that is the same instant (float noise in
                # end + delay, kept to 1e-9 s here and not always by the clock): waits tile.
                out.append(Wait(a.step, a.target, a.attempt, previous.end, a.start if a.start - since <= EPS else since, "retry delay", cause))
        if a.start - since > EPS:
            _, kind, cause = _blocker(a, log, ended_at)
            out.append(Wait(a.step, a.target, a.attempt, since, a.start, kind, cause or "waited in its step (cause not recorded)"))
    return out


def _ready_times(log: _Log) -> list[float]:
    """For each step, when its last prerequisite became terminal; without any, when the
    deployment began (its first pass: a real run's log starts a little after 0)."""
    core = log.core
    n = core.n_steps
    began = min(log.activated.values(), default=0.0)
    terminal = [log.terminal.get(s, began) for s in range(n)]
    prefix_max = [began] * (n + 1)  # prefix_max[k]: the latest end among steps < k
    for s in range(n):
        prefix_max[s + 1] = max(prefix_max[s], terminal[s])
    out = []
    for s in range(n):
        explicit = core.prereq_explicit[s]
        out.append(prefix_max[core.prereq_prefix[s] or 0] if explicit is None else max((terminal[p] for p in explicit), default=began))
    return out
