"""GitHub Actions: the jobs of a workflow run (+ optionally the workflow file) in, a
scenario and the recorded event log out.

Files: the jobs of a run, `/actions/runs/{id}/jobs` (`jobs[]`: `name`, `status`,
`conclusion`, `created_at`, `started_at`, `completed_at`, `run_attempt`, ...): one page,
several pages (several files, or one file holding a list of them or several documents
one after another, as `gh api --paginate` writes them), or a plain list of jobs. A reply
whose `total_count` says there are more jobs than its pages hold is bad input naming the
missing pages. Optionally the workflow file, for `needs`, `strategy.max-parallel` and
`if`.

Mapping: a job is a step. The instances of a matrix job (`NAME (a, b)`, or the names its
`name:` template expands to) are one step whose targets are the instances (named as
GitHub names them); `strategy.max-parallel` is its window. `needs` gives `depends_on`.
Without the workflow, a job depends on every job that had completed when it was
created (GitHub creates a job once its needs are done), reduced to the direct ones; the
notes and the log's `options` say these dependencies are inferred. Jobs skipped by an
`if:` the rules cannot see (nothing had failed) are left out, with a note. GitHub runs
every ready job at once: the policy allows as many steps and targets at once as the run
has.

Queue time. GitHub records when a job was created (queued), when a runner picked it up
and when it completed. The model: a job's recorded attempt runs from the moment the
rules would start it — the run's start for a job without needs, else the end of the
last of its needs (and a free place in its matrix's window) — to its `completed_at`. So
the dispatch delay and the wait for a runner go with the job, as they would under any
other setting, and a run whose dependencies are right replays to its recorded span.
The notes give each job's wait for a runner (`started_at - created_at`).
"""

from __future__ import annotations

import statistics
from typing import Any

from simulator.importers.record import (
    NS,
    Attempt,
    Execution,
    Imported,
    Reader,
    Record,
    StepRecord,
    finish,
    item,
    key,
    missing_pages,
    page_list,
    ready_starts,
    rules_skip,
    split_pages,
    wall_of,
)

Doc = tuple[str, Any]

CONCLUSION = {
    "success": "succeeded",
    "neutral": "succeeded",
    "failure": "failed",
    "startup_failure": "failed",
    "action_required": "failed",
    "stale": "failed",
    "timed_out": "timed_out",
    "cancelled": "cancelled",
    "skipped": "skipped",
}
WAIT_WORTH_A_NOTE = 30 * NS


class Job:
    __slots__ = ("id", "name", "created", "started", "completed", "outcome", "attempt", "file", "path", "run", "workflow")

    def __init__(self, **kw: Any):
        for k, v in kw.items():
            setattr(self, k, v)


def split_instance(name: str) -> tuple[str, str | None]:
    """`Test (ubuntu-latest, 20)` -> ('Test', 'ubuntu-latest, 20'); `Lint` -> ('Lint', None)."""
    if not name.endswith(")"):
        return name, None
    i = name.find(" (")
    while i != -1:
        inner = name[i + 2 : -1]
        depth = 0
        balanced = True
        for c in inner:
            depth += (c == "(") - (c == ")")
            if depth < 0:
                balanced = False
                break
        if balanced and depth == 0 and inner:
            return name[:i], inner
        i = name.find(" (", i + 1)
    return name, None


def _template_parts(text: str) -> list[str] | None:
    """The literal parts of a `name:` with `${{ }}` expressions; None if it has none."""
    if "${{" not in text:
        return None
    parts = []
    rest = text
    while "${{" in rest:
        before, _, after = rest.partition("${{")
        parts.append(before)
        _, _, rest = after.partition("}}")
    parts.append(rest)
    return parts


def _matches(parts: list[str], name: str) -> bool:
    if not name.startswith(parts[0]) or not name.endswith(parts[-1]) or len(name) < len(parts[0]) + len(parts[-1]):
        return False
    pos = len(parts[0])
    end = len(name) - len(parts[-1])
    for middle in parts[1:-1]:
        found = name.find(middle, pos, end)
        if found == -1:
            return False
        pos = found + len(middle)
    return True


def read_jobs(docs: list[Doc], notes: list[str]) -> list[Job]:
    """Every job of the pages given (see the module docstring)."""
    jobs: list[Job] = []
    totals: list[int] = []
    counts: list[int] = []
    first_file = docs[0][0]
    seen_ids: dict[Any, str] = {}
    for file, data in docs:
        r = Reader(file)
        pages, plain = split_pages(r, data, "jobs")
        for p, page in pages:
            items = r.items(r.field(page, "jobs", p), key(p, "jobs"))
            plain += [(item(key(p, "jobs"), i), x) for i, x in enumerate(items)]
            total = page.get("total_count")
            if isinstance(total, int) and not isinstance(total, bool):
                totals.append(total)
                counts.append(len(items))
        for p, raw in plain:
            jobs.append(_job(r, raw, p, seen_ids))
    if totals:
        missing = missing_pages(max(totals), counts, [None] * len(counts))
        if missing:
            size = max(counts)
            raise Reader(first_file).bad(
                "$",
                f"{sum(counts)} of {max(totals)} jobs (total_count): {page_list(missing)} of {-(-max(totals) // size)} "
                f"missing ({size} per page); fetch them (?per_page={size}&page=N) and give every page (--jobs again)",
            )
    if not jobs:
        raise Reader(first_file).bad("$.jobs", "no jobs: an empty run")
    # A job re-run in a later attempt of the run: the latest attempt is the record.
    latest: dict[str, Job] = {}
    for job in jobs:
        kept = latest.get(job.name)
        if kept is None or (job.attempt, job.created) > (kept.attempt, kept.created):
            latest[job.name] = job
    if len(latest) < len(jobs):
        notes.append(f"{len(jobs) - len(latest)} jobs of earlier attempts of the run left out (the latest attempt of each job is the record)")
    return sorted(latest.values(), key=lambda j: (j.created, j.started or j.created, j.id if isinstance(j.id, int) else 0))


def _job(r: Reader, raw: Any, p: str, seen_ids: dict[Any, str]) -> Job:
    j = r.obj(raw, p)
    name = r.text(j, "name", p)
    job_id = j.get("id")
    if job_id is not None:
        if job_id in seen_ids:
            raise r.bad(key(p, "id"), f"job {job_id} is also at {seen_ids[job_id]} (a page given twice?)")
        seen_ids[job_id] = f"{r.file}: {p}"
    status = r.text(j, "status", p)
    if status != "completed":
        raise r.bad(key(p, "status"), f"{status!r}: the run has not finished; import it once every job has completed")
    conclusion = r.text(j, "conclusion", p)
    if conclusion not in CONCLUSION:
        raise r.bad(key(p, "conclusion"), f"expected one of {', '.join(CONCLUSION)}, got {conclusion!r}")
    created = r.time(j, "created_at", p)
    ran = conclusion not in ("skipped",)
    started = r.time(j, "started_at", p, optional=True)
    completed = r.time(j, "completed_at", p, optional=not ran)
    if ran and started is None and conclusion != "cancelled":
        raise r.bad(key(p, "started_at"), "expected an ISO-8601 time, got null")
    if started is not None and completed is not None and completed < started:
        raise r.bad(key(p, "completed_at"), f"before started_at ({wall_of(completed)} < {wall_of(started)})")
    assert created is not None
    attempt = j.get("run_attempt") if isinstance(j.get("run_attempt"), int) else 1
    return Job(
        id=job_id, name=name, created=created, started=started, completed=completed if completed is not None else (started or created),
        outcome=CONCLUSION[conclusion], attempt=attempt, file=r.file, path=p, run=j.get("run_id"),
        workflow=j.get("workflow_name") if isinstance(j.get("workflow_name"), str) else None,
    )


class StepSpec:
    __slots__ = ("name", "jobs", "matrix", "needs", "window", "condition", "key", "position")

    def __init__(self, name: str, key: str | None, position: int | None = None):
        self.name = name
        self.key = key  # the workflow's job id
        self.position = position  # its place among the workflow's jobs
        self.jobs: list[Job] = []
        self.matrix = False
        self.needs: list[str] | None = None  # workflow job ids; None: unknown
        self.window: int | None = None
        self.condition = "success"


def _condition(expr: Any) -> str:
    text = str(expr).replace(" ", "") if expr is not None else ""
    if "always()" in text or "!cancelled()" in text:
        return "always"
    if "failure()" in text and "!failure()" not in text:
        return "failure"
    return "success"


def _group(jobs: list[Job], workflow: Doc | None, notes: list[str]) -> list[StepSpec]:
    steps: list[StepSpec] = []
    by_job: dict[str, StepSpec] = {}
    if workflow is not None:
        file, data = workflow
        r = Reader(file)
        top = r.obj(data, "$")
        spec_jobs = r.obj(r.field(top, "jobs", "$"), "$.jobs")
        matchers = []
        for job_key, raw in spec_jobs.items():
            p = key("$.jobs", str(job_key))
            spec = r.obj(raw, p)
            display = spec.get("name", job_key)
            display = str(display)
            strategy = spec.get("strategy") if isinstance(spec.get("strategy"), dict) else {}
            matrix = "matrix" in strategy
            parts = _template_parts(display)
            step = StepSpec(str(job_key) if parts is not None else display, str(job_key), len(matchers))
            step.matrix = matrix or parts is not None
            needs = spec.get("needs", [])
            if isinstance(needs, str):
                needs = [needs]
            if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
                raise r.bad(key(p, "needs"), f"expected a job id or a list of them, got {needs!r}")
            for n in needs:
                if n not in spec_jobs:
                    raise r.bad(key(p, "needs"), f"no job {n!r} in this workflow")
            step.needs = list(needs)
            window = strategy.get("max-parallel")
            if isinstance(window, int) and not isinstance(window, bool) and window >= 1:
                step.window = window
            step.condition = _condition(spec.get("if"))
            by_job[str(job_key)] = step
            matchers.append((step, parts, display, matrix))
        unmatched = []
        for job in jobs:
            chosen = None
            for step, parts, display, matrix in matchers:
                if parts is not None and _matches(parts, job.name):
                    chosen = step
                elif parts is None and (job.name == display or (matrix and split_instance(job.name)[0] == display)):
                    chosen = step
                if chosen is not None:
                    break
            if chosen is None:
                unmatched.append(job)
            else:
                chosen.jobs.append(job)
        for step, *_ in matchers:
            if step.jobs:
                steps.append(step)
            else:
                notes.append(f"workflow job {step.key!r} did not run in this record: left out")
        if unmatched:
            notes.append(
                f"{len(unmatched)} jobs match no job of {file} (reusable workflows?): each is a step of its own, "
                f"its dependencies inferred from the times: {', '.join(repr(j.name) for j in unmatched[:5])}"
            )
            for job in unmatched:
                s = StepSpec(job.name, None)
                s.jobs.append(job)
                steps.append(s)
    else:
        groups: dict[str, StepSpec] = {}
        for job in jobs:
            base, instance = split_instance(job.name)
            step = groups.get(base)
            if step is None:
                step = groups[base] = StepSpec(base, None)
                steps.append(step)
            step.jobs.append(job)
            step.matrix = step.matrix or instance is not None
        for step in steps:
            if not step.matrix and len(step.jobs) > 1:
                step.matrix = True  # several jobs of one name: instances
    names: dict[str, int] = {}
    for step in steps:
        if step.name in names:
            names[step.name] += 1
            step.name = f"{step.name} #{names[step.name]}"
        else:
            names[step.name] = 1
    return steps


def convert(docs: list[Doc], workflow: Doc | None = None) -> Imported:
    """Import one GitHub Actions run (see the module docstring)."""
    notes: list[str] = []
    jobs = read_jobs(docs, notes)
    file = docs[0][0]
    steps = _group(jobs, workflow, notes)
    t0 = min(j.created for j in jobs)
    end0 = max(j.completed for j in jobs)

    # Dependencies: the workflow's needs, else inferred from the times.
    index = {s.key: i for i, s in enumerate(steps) if s.key is not None}
    created = [min(j.created for j in s.jobs) for s in steps]
    ended = [max(j.completed for j in s.jobs) for s in steps]
    deps: list[set[int]] = []
    inferred: list[str] = []
    for i, s in enumerate(steps):
        if s.needs is not None:
            deps.append({index[n] for n in s.needs if n in index})
            gone = [n for n in s.needs if n not in index]
            if gone:
                notes.append(f"step {s.name!r} needs {', '.join(map(repr, gone))}, which did not run: that need is left out")
        else:
            deps.append({k for k in range(len(steps)) if k != i and ended[k] <= created[i] and created[k] < created[i]})
    for i, s in enumerate(steps):
        if s.needs is None and deps[i]:
            # Keep the direct ones: k is implied when another job m of the set was created
            # after k had ended (then m waited for k already). The latest-created m decides.
            by_created = sorted(deps[i], key=lambda m: created[m], reverse=True)
            latest = by_created[0]
            second = created[by_created[1]] if len(by_created) > 1 else None
            direct = set()
            for k in deps[i]:
                c = created[latest] if k != latest else second
                if c is None or not (ended[k] <= c and created[k] < c):
                    direct.add(k)
            deps[i] = direct
            if direct:
                inferred.append(f"{s.name} <- {', '.join(steps[k].name for k in sorted(direct))}")
    order = _topological(steps, deps, created, workflow is not None)
    # Without the workflow, a job that ran after a failure must have had `if: always()`
    # (or failure()): taken as always.
    first_failure = min((j.completed for j in jobs if j.outcome in ("failed", "timed_out")), default=None)
    for i, s in enumerate(steps):
        if s.needs is None and first_failure is not None and first_failure <= created[i] and any(j.outcome != "skipped" for j in s.jobs):
            s.condition = "always"
            notes.append(f"job {s.name!r} ran after a failure: condition 'always' (inferred)")

    # The error flag as the rules see it, to keep only the skips the rules make.
    failed_at = [min((j.completed for j in s.jobs if j.outcome in ("failed", "timed_out")), default=None) for s in steps]
    records: list[StepRecord] = []
    specs: list[dict[str, Any]] = []
    kept: set[int] = set()
    leading = True
    max_targets = 1
    waits: list[tuple[int, str]] = []
    dropped: set[int] = set()
    for i in order:
        s = steps[i]
        skipped = all(j.outcome == "skipped" for j in s.jobs)
        if skipped:
            if not rules_skip(s.condition, failed_at, created[i]):
                notes.append(f"job {s.name!r} was skipped by a condition the rules cannot see (nothing had failed): left out")
                dropped.add(i)
    # A need that is left out passes its own needs on.
    expanded: dict[int, set[int]] = {}
    for i in order:
        expanded[i] = set()
        for k in deps[i]:
            expanded[i] |= expanded[k] if k in dropped else {k}
    for i in order:
        if i in dropped:
            continue
        s = steps[i]
        skipped = all(j.outcome == "skipped" for j in s.jobs)
        ready = max([t0] + [ended[k] for k in expanded[i]])
        kept.add(i)
        spec: dict[str, Any] = {"name": s.name}
        my_deps = [steps[k].name for k in order if k in expanded[i]]
        if not expanded[i] and leading:
            if records:
                spec["start"] = "with-previous"
        else:
            leading = False
            spec["depends_on"] = my_deps
        if s.condition != "success":
            spec["condition"] = s.condition
        executions: list[Execution] = []
        if s.matrix:
            spec["roles"] = [s.name]
            if s.window is not None:
                spec["window"] = s.window
            # GitHub creates a matrix's jobs in matrix order (ascending ids) and starts them
            # in that order as places in max-parallel free up: that is the target order.
            instances = sorted(s.jobs, key=lambda j: (j.id if isinstance(j.id, int) else 0, j.created, j.name))
            max_targets = max(max_targets, len(instances))
        else:
            instances = list(s.jobs)
        ran = [j for j in instances if j.outcome != "skipped" and j.started is not None]
        starts = ready_starts([j.completed for j in ran], ready, s.window if s.matrix else None)
        start_of = {id(j): st for j, st in zip(ran, starts, strict=True)}
        for j in instances:
            target = j.name if s.matrix else None
            if id(j) not in start_of:
                executions.append(Execution(target, []))
                continue
            start = start_of[id(j)]
            if j.completed < start:
                notes.append(f"job {j.name!r} completed before its needs did ({wall_of(j.completed)}): its attempt is taken as 0 s")
                start = j.completed
            executions.append(Execution(target, [Attempt(start, j.completed, j.outcome)]))
            if j.started is not None:
                waits.append((j.started - j.created, j.name))
        outcomes = {a.outcome for e in executions for a in e.attempts}
        outcome = "skipped" if skipped else "failed" if outcomes & {"failed", "timed_out"} else "cancelled" if "cancelled" in outcomes else "succeeded"
        records.append(
            StepRecord(name=s.name, outcome=outcome, start=ready if not skipped else max(ready, created[i]), end=max([ready] + [j.completed for j in s.jobs]), executions=executions, reason="skipped in the record (a need failed)" if skipped else None)
        )
        specs.append(spec)

    if not records:
        raise Reader(file).bad("$.jobs", "every job was skipped: an empty run")
    targets = [{"name": e.target, "roles": [spec["name"]]} for spec, rec in zip(specs, records, strict=True) for e in rec.executions if e.target is not None]
    first = jobs[0]
    run_name = _run_name(jobs)
    scenario: dict[str, Any] = {"name": run_name}
    policy = {}
    if len(specs) > 10:
        policy["max_parallel_steps"] = len(specs)
    if max_targets > 10:
        policy["max_parallel_targets"] = max_targets
    if policy:
        scenario["policy"] = policy
    scenario["targets"] = targets
    scenario["steps"] = specs
    failed = any(r.outcome == "failed" for r in records)
    cancelled = any(r.outcome == "cancelled" for r in records)
    run_id = next((j.run for j in jobs if j.run is not None), first.id)
    attempt = max(j.attempt for j in jobs)
    if waits:
        longest = max(waits)
        notes.append(
            f"queue: jobs waited {statistics.median(w for w, _ in waits) / NS:g}s for a runner (median), at most "
            f"{longest[0] / NS:g}s ({longest[1]}); each wait is in its job's time (see `abreast import github --help`)"
        )
    if inferred:
        notes.append(f"no workflow given: dependencies inferred from the times: {'; '.join(inferred)}")
    record = Record(
        tool="github",
        id=f"github-{run_id}" + (f"-{attempt}" if attempt > 1 else ""),
        start=t0,
        end=end0,
        outcome="failed" if failed else "cancelled" if cancelled else "succeeded",
        steps=records,
        options={
            "imported_from": "github",
            "run": run_id,
            "queue_model": "an attempt runs from when the rules would start the job to its completed_at",
            "inferred_dependencies": inferred,
        },
    )
    return finish(scenario, record, notes, file)


def _topological(steps: list[StepSpec], deps: list[set[int]], created: list[int], by_workflow: bool) -> list[int]:
    """Each step after its needs; otherwise in the workflow's order of its jobs when it is
    given, else those without dependencies first, by creation."""
    import heapq

    n = len(steps)
    keys: list[tuple] = []
    for i, s in enumerate(steps):
        if by_workflow:
            keys.append((s.position if s.position is not None else n, created[i]))
        else:
            keys.append((0 if not deps[i] else 1, created[i]))
    indegree = [len(d) for d in deps]
    dependents: list[list[int]] = [[] for _ in range(n)]
    for i, d in enumerate(deps):
        for k in d:
            dependents[k].append(i)
    heap = [(keys[i], i) for i in range(n) if indegree[i] == 0]
    heapq.heapify(heap)
    out = []
    while heap:
        _, i = heapq.heappop(heap)
        out.append(i)
        for m in dependents[i]:
            indegree[m] -= 1
            if indegree[m] == 0:
                heapq.heappush(heap, (keys[m], m))
    if len(out) < n:  # a cycle in the workflow's needs (GitHub refuses those): keep the rest by time
        out += sorted((i for i in range(n) if i not in set(out)), key=lambda i: created[i])
    return out


def _run_name(jobs: list[Job]) -> str:
    names = [j.workflow for j in jobs if j.workflow]
    runs = [j.run for j in jobs if j.run is not None]
    if names:
        return f"{names[0]} (run {runs[0]})" if runs else names[0]
    return f"GitHub Actions run {runs[0]}" if runs else "GitHub Actions run"
