"""The advisor: single changes to a deployment, ranked by the time they save.

Candidates, each simulated with the same seed as the scenario as written (so the same
durations), one change at a time:
- run a step with the previous one (`start: with-previous`);
- replace a step's barrier (after-previous) with `depends_on` on the earlier steps that
  touch its targets or its resources: the ones it can be seen to need;
- raise a step's window (double it, and to all its targets);
- bypass the target lock for one step (`isolation: shared`) where it shares targets
  with a step that can run beside it;
- allow more steps at once (`max_parallel_steps`).

A change to a step with `depends_on` is never proposed, and no `depends_on` is ever
removed or shortened: those are dependencies someone declared.

Order on a target. As written, the steps ran on each target in some order (push the
package, then upgrade). A change can let a later step overtake an earlier one on a
target that both touch: the lock keeps them apart but not in order. By default such a
change is not offered: every change and every combination offered keeps, on every
target (and on the server, for steps without roles), the order in which the steps first
started there. With `allow_reorder` they are offered too, each saying which targets and
which steps it reorders.

What abreast cannot know: a step may need another's output without sharing a target or
a resource with it (a hidden dependency). Steps that depend on each other must not run
in parallel; every change here assumes they do not, and says what it assumed.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.core import Core
from engine.plan import Plan, fan_out
from engine.report import Report
from engine.scenario import ScenarioError, resolve
from simulator.analysis import Bound, lower_bound
from simulator.sim import run
from simulator.whatif import plan_for

WARNING = (
    "Steps that depend on each other must not run in parallel. abreast cannot see a hidden "
    "dependency (a step that reads what another writes without sharing a target or resource); "
    "each change says what it assumed. Check it before you apply it."
)


class Reorder(msgspec.Struct):
    """On `targets`, step `first` now starts before step `then`, which started before it
    as written (target null: the server)."""

    first: str
    then: str
    targets: list[str | None]


class Change(msgspec.Struct):
    change: str  # for people
    settings: dict[str, Any]  # as --set KEY=VALUE
    assumption: str
    makespan: float = 0.0
    saved: float = 0.0
    reorders: list[Reorder] = []


class Advice(msgspec.Struct):
    makespan: float
    lower_bound: Bound
    changes: list[Change]
    best: list[Change]
    best_makespan: float
    best_lower_bound: Bound
    warning: str = WARNING
    best_reorders: list[Reorder] = []  # what the best combination reorders (only with allow_reorder)
    withheld: int = 0  # changes that would reorder steps on a target, not offered


def candidates(plan: Plan) -> list[Change]:
    """Every single change worth simulating (see the module docstring)."""
    steps = plan.steps
    core = Core(plan, "advise")
    fanned = fan_out(plan)
    touches = []
    for s, f in zip(steps, fanned, strict=True):
        touches.append(({plan.targets[i].name for i in f}, set(s.uses)))
    out: list[Change] = []
    for i, s in enumerate(steps):
        key = f"steps.{s.name}"
        # A failure or always step is meant to come after what precedes it: leave it be.
        if i > 0 and s.depends_on is None and s.start == "after-previous" and s.condition == "success":
            prev = steps[i - 1].name
            out.append(
                Change(
                    f"run {s.name!r} with the previous step",
                    {f"{key}.start": "with-previous"},
                    f"{s.name!r} does not need what {prev!r} does" + _shared_note(touches, i, i - 1, steps),
                )
            )
            needed = [
                steps[j].name
                for j in range(i)
                if (touches[j][0] & touches[i][0]) or (touches[j][1] & touches[i][1])
            ]
            prereq_count = core.prereq_prefix[i] or 0
            # Waiting for nothing at all is too bold a guess (a smoke test touches no
            # target, yet needs the deploy): only propose a narrower, non-empty set.
            if needed and len(needed) < prereq_count:
                out.append(
                    Change(
                        f"let {s.name!r} wait only for {', '.join(repr(n) for n in needed) or 'nothing'}",
                        {f"{key}.depends_on": needed},
                        f"{s.name!r} needs only the earlier steps that touch its targets or resources",
                    )
                )
        n_targets = len(fanned[i])
        window = plan.window_of(s)
        if s.roles and n_targets > window:
            for w in sorted({min(n_targets, window * 2), n_targets}):
                out.append(
                    Change(
                        f"raise {s.name!r}'s window from {window} to {w}",
                        {f"{key}.window": w},
                        f"{w} of {s.name!r}'s targets may be busy at once",
                    )
                )
        for j in _concurrent_sharing(i, touches, core, steps):
            # A shared execution still waits for an exclusive holder: bypassing the
            # lock between two steps makes both shared.
            if plan.isolation_of(s) == "exclusive" or plan.isolation_of(steps[j]) == "exclusive":
                other = steps[j].name
                out.append(
                    Change(
                        f"bypass the target lock between {s.name!r} and {other!r}",
                        {f"{key}.isolation": "shared", f"steps.{other}.isolation": "shared"},
                        f"{s.name!r} and {other!r} can run on one target at the same time",
                    )
                )
    if len(steps) > plan.policy.max_parallel_steps:
        m = plan.policy.max_parallel_steps * 2
        out.append(Change(f"allow {m} steps at once", {"max_parallel_steps": m}, "more steps may be active at once"))
    return out


def _shared_note(touches, i: int, j: int, steps) -> str:  # noqa: ANN001
    targets = touches[i][0] & touches[j][0]
    if targets:
        return f" (they share targets, e.g. {sorted(targets)[0]}: the lock still keeps them apart there)"
    return ""


def _concurrent_sharing(i: int, touches, core: Core, steps) -> list[int]:  # noqa: ANN001
    """Later steps of step i's block (same prerequisites) that share a target with it."""
    mine = (core.prereq_prefix[i], tuple(core.prereq_explicit[i] or ()))
    return [
        j
        for j in range(i + 1, len(steps))
        if (core.prereq_prefix[j], tuple(core.prereq_explicit[j] or ())) == mine and touches[i][0] & touches[j][0]
    ]


Orders = dict[str | None, dict[str, int]]


def first_start_orders(report: Report) -> Orders:
    """Per target (None: the server), each step's place in the order in which the steps
    first started there."""
    orders: Orders = {}
    for row in report.rows:  # in start order
        if row.attempt == 1:
            places = orders.setdefault(row.target, {})
            places.setdefault(row.step, len(places))
    return orders


def reorders(written: Orders, changed: Report) -> list[Reorder]:
    """Where `changed` lets a step start on a target before one that started before it
    as written, grouped by the pair of steps, in the order first found."""
    found: dict[tuple[str, str], list[str | None]] = {}
    for target, places in first_start_orders(changed).items():
        was = written.get(target, {})
        ran = [step for step in places if step in was]  # in the changed order
        for i, early in enumerate(ran):
            for late in ran[i + 1 :]:
                if was[late] < was[early]:  # `late` started first as written: `early` overtook it
                    found.setdefault((early, late), []).append(target)
    return [Reorder(first=early, then=late, targets=targets) for (early, late), targets in found.items()]


def advise(raw: dict, seed: int = 0, file: str = "<scenario>", allow_reorder: bool = False) -> Advice:
    """Simulate every candidate change and a greedy combination (see the module
    docstring); without `allow_reorder`, only those that keep every target's order."""
    plan = resolve(raw, file=file)
    report = run(plan, seed)
    makespan = report.makespan or 0.0
    bound, _ = lower_bound(plan, report)
    written = first_start_orders(report)
    changes = []
    withheld = 0
    for change in candidates(plan):
        result = run(plan_for(raw, change.settings, file), seed)
        change.makespan = result.makespan or 0.0
        change.saved = round(makespan - change.makespan, 9)
        change.reorders = reorders(written, result)
        if change.reorders and not allow_reorder:
            withheld += 1
            continue
        changes.append(change)
    changes.sort(key=lambda c: (-c.saved, c.change))
    # The best combination: add the helpful changes greedily, keep what still helps (and,
    # by default, what still keeps every target's order).
    best: list[Change] = []
    settings: dict[str, Any] = {}
    best_makespan = makespan
    best_reorders: list[Reorder] = []
    for change in changes:
        if change.saved <= 1e-9:
            break
        trial = {**settings, **change.settings}
        try:
            result = run(plan_for(raw, trial, file), seed)
        except ScenarioError:  # an invalid combination (with-previous and depends_on on one step)
            continue
        m = result.makespan or 0.0
        moved = reorders(written, result)
        if moved and not allow_reorder:
            continue
        if m < best_makespan - 1e-9:
            best.append(change)
            settings = trial
            best_makespan = m
            best_reorders = moved
    best_plan = plan_for(raw, settings, file)
    best_bound, _ = lower_bound(best_plan, run(best_plan, seed))
    return Advice(
        makespan, bound, changes, best, best_makespan, best_bound, best_reorders=best_reorders, withheld=withheld
    )
