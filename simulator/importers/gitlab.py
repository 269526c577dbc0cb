"""GitLab CI: the jobs of a pipeline (+ optionally `.gitlab-ci.yml`) in, a scenario and
the recorded event log out.

Files: the jobs of a pipeline, `/projects/:id/pipelines/:pipeline_id/jobs` (a list of
jobs: `id`, `name`, `stage`, `status`, `created_at`, `started_at`, `finished_at`,
`duration`, `queued_duration`, `allow_failure`, `pipeline`; several pages as several
files, one file holding a list of pages, or several documents one after another; with
`include_retried=true` a retried job appears once per attempt). Optionally
`.gitlab-ci.yml`: `stages`, and per job `stage`, `needs`, `parallel` (`N` or `matrix`),
`resource_group`, `when`, `retry`.

Mapping: stages in order (the file's `stages`, else the order GitLab numbered the jobs
in); a job is a step, and the jobs of a stage run side by side: a job waits for every
job of the earlier stages, unless it has `needs` (then exactly those). The instances of
`parallel: N` (`rspec 2/4`) and `parallel: matrix` (`deploy: [aws, eu]`) are the targets
of one step. `resource_group` is a resource of capacity 1 that the job holds while it
runs. `when: on_failure` is condition `failure`, `when: always` is `always`. A job that
was allowed to fail (`allow_failure`) and failed does not stop the pipeline: it is
recorded as succeeded (with a note). Several jobs of one name are the attempts of one
execution, in id order. Without the file, a job that started before the earlier stages
had all finished must have had `needs`: those are inferred from the times (the jobs of
earlier stages that had finished when it was queued) and said to be inferred.

Queue time is modelled as for GitHub: a job's attempt runs from the moment the rules
would start it (the pipeline's creation, the end of what it waits for, its resource
group free) to its `finished_at`; `queued_duration` (waiting for a runner) is inside it,
and the notes sum it up.
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
    rules_skip,
    wall_of,
)

Doc = tuple[str, Any]

STATUS = {"success": "succeeded", "failed": "failed", "canceled": "cancelled", "cancelled": "cancelled", "skipped": "skipped", "manual": "manual"}
UNFINISHED = ("created", "pending", "running", "preparing", "waiting_for_resource", "scheduled", "canceling", "waiting_for_callback")
DEFAULT_STAGES = [".pre", "build", "test", "deploy", ".post"]
NOT_JOBS = frozenset(
    "stages variables default workflow include image services before_script after_script cache pages_dummy spec".split()
)


def split_instance(name: str) -> tuple[str, str | None]:
    """`deploy: [aws, eu]` -> ('deploy', 'aws, eu'); `rspec 2/4` -> ('rspec', '2/4')."""
    if name.endswith("]") and ": [" in name:
        base, _, rest = name.partition(": [")
        return base, rest[:-1]
    base, sep, last = name.rpartition(" ")
    if sep and "/" in last:
        k, _, n = last.partition("/")
        if k.isdigit() and n.isdigit():
            return base, last
    return name, None


class Job:
    __slots__ = ("id", "name", "stage", "status", "created", "started", "finished", "queued", "allow_failure", "path", "file", "pipeline", "ref")

    def __init__(self, **kw: Any):
        for k, v in kw.items():
            setattr(self, k, v)


def read_jobs(docs: list[Doc]) -> list[Job]:
    jobs: list[Job] = []
    seen: dict[Any, str] = {}
    for file, data in docs:
        r = Reader(file)
        plain: list[tuple[str, Any]] = []
        if isinstance(data, dict) and "jobs" in data:
            plain = [(item("$.jobs", i), x) for i, x in enumerate(r.items(data["jobs"], "$.jobs"))]
        elif isinstance(data, list) and data and all(isinstance(x, list) for x in data):
            plain = [(item(item("$", p), i), x) for p, page in enumerate(data) for i, x in enumerate(page)]
        else:
            plain = [(item("$", i), x) for i, x in enumerate(r.items(data, "$"))]
        for p, raw in plain:
            j = r.obj(raw, p)
            name = r.text(j, "name", p)
            job_id = j.get("id")
            if job_id is not None:
                if job_id in seen:
                    raise r.bad(key(p, "id"), f"job {job_id} is also at {seen[job_id]} (a page given twice?)")
                seen[job_id] = f"{r.file}: {p}"
            status = r.text(j, "status", p)
            if status in UNFINISHED:
                raise r.bad(key(p, "status"), f"{status!r}: the pipeline has not finished; import it once it has")
            if status not in STATUS:
                raise r.bad(key(p, "status"), f"expected one of {', '.join(STATUS)}, got {status!r}")
            ran = status in ("success", "failed") or (status in ("canceled", "cancelled") and j.get("started_at") is not None)
            created = r.time(j, "created_at", p)
            started = r.time(j, "started_at", p, optional=not ran)
            finished = r.time(j, "finished_at", p, optional=not ran)
            if started is not None and finished is not None and finished < started:
                raise r.bad(key(p, "finished_at"), f"before started_at ({wall_of(finished)} < {wall_of(started)})")
            r.number(j, "duration", p, optional=True)
            queued = r.number(j, "queued_duration", p, optional=True)
            allow = j.get("allow_failure") is True
            stage = j.get("stage") if isinstance(j.get("stage"), str) else "test"
            pipeline = j.get("pipeline") if isinstance(j.get("pipeline"), dict) else {}
            jobs.append(
                Job(id=job_id, name=name, stage=stage, status=STATUS[status], created=created, started=started if ran else None,
                    finished=finished if ran else None, queued=queued, allow_failure=allow, path=p, file=file,
                    pipeline=pipeline.get("id"), ref=j.get("ref") if isinstance(j.get("ref"), str) else pipeline.get("ref"))
            )
    if not jobs:
        raise Reader(docs[0][0]).bad("$", "no jobs: an empty pipeline")
    return jobs


class CiJob:
    __slots__ = ("name", "stage", "needs", "resource_group", "condition", "retry", "matrix")

    def __init__(self, name: str):
        self.name = name
        self.stage = "test"
        self.needs: list[str] | None = None
        self.resource_group: str | None = None
        self.condition = "success"
        self.retry = 0
        self.matrix = False


def read_ci(doc: Doc) -> tuple[list[str], dict[str, CiJob]]:
    file, data = doc
    r = Reader(file)
    top = r.obj(data, "$")
    stages = top.get("stages", DEFAULT_STAGES)
    if not isinstance(stages, list) or not all(isinstance(s, str) for s in stages):
        raise r.bad("$.stages", f"expected a list of stage names, got {stages!r}")
    stages = [s for s in [".pre", *stages, ".post"] if s]
    stages = list(dict.fromkeys(stages))
    jobs: dict[str, CiJob] = {}
    for name, raw in top.items():
        if not isinstance(name, str) or name in NOT_JOBS or name.startswith(".") or not isinstance(raw, dict):
            continue
        p = key("$", name)
        job = CiJob(name)
        stage = raw.get("stage", "test")
        if not isinstance(stage, str) or stage not in stages:
            raise r.bad(key(p, "stage"), f"expected one of the stages {stages}, got {stage!r}")
        job.stage = stage
        if "needs" in raw:
            needs = raw["needs"]
            if not isinstance(needs, list):
                raise r.bad(key(p, "needs"), f"expected a list, got {needs!r}")
            names = []
            for i, n in enumerate(needs):
                if isinstance(n, dict) and isinstance(n.get("job"), str):
                    n = n["job"]
                if not isinstance(n, str):
                    raise r.bad(item(key(p, "needs"), i), f"expected a job name, got {n!r}")
                names.append(n)
            job.needs = names
        group = raw.get("resource_group")
        if group is not None:
            if not isinstance(group, str) or not group:
                raise r.bad(key(p, "resource_group"), f"expected a name, got {group!r}")
            job.resource_group = group
        when = raw.get("when", "on_success")
        job.condition = {"on_failure": "failure", "always": "always"}.get(str(when), "success")
        retry = raw.get("retry", 0)
        if isinstance(retry, dict):
            retry = retry.get("max", 0)
        if isinstance(retry, int) and not isinstance(retry, bool) and retry >= 0:
            job.retry = retry
        job.matrix = "parallel" in raw
        jobs[name] = job
    for job in jobs.values():
        for n in job.needs or []:
            if n not in jobs:
                raise r.bad(key(key("$", job.name), "needs"), f"no job {n!r} in {file}")
    return stages, jobs


class Group:
    __slots__ = ("name", "stage", "jobs", "matrix", "needs", "resource_group", "condition", "retry", "inferred")

    def __init__(self, name: str, stage: str):
        self.name = name
        self.stage = stage
        self.jobs: list[Job] = []
        self.matrix = False
        self.needs: list[str] | None = None
        self.resource_group: str | None = None
        self.condition = "success"
        self.retry = 0
        self.inferred = False


def convert(docs: list[Doc], ci: Doc | None = None) -> Imported:
    """Import one GitLab pipeline (see the module docstring)."""
    notes: list[str] = []
    jobs = read_jobs(docs)
    file = docs[0][0]
    stages, ci_jobs = read_ci(ci) if ci is not None else (None, {})

    groups: dict[str, Group] = {}
    for job in sorted(jobs, key=lambda j: (j.id if isinstance(j.id, int) else 0, j.created)):
        base, instance = split_instance(job.name)
        g = groups.get(base)
        if g is None:
            g = groups[base] = Group(base, job.stage)
        g.jobs.append(job)
        g.matrix = g.matrix or instance is not None
        spec = ci_jobs.get(base)
        if spec is not None:
            g.stage, g.needs, g.resource_group, g.condition, g.retry = spec.stage, spec.needs, spec.resource_group, spec.condition, spec.retry
            g.matrix = g.matrix or spec.matrix
    manual = [g for g in groups.values() if all(j.status == "manual" for j in g.jobs)]
    for g in manual:
        notes.append(f"job {g.name!r} is manual and was never played: left out")
        del groups[g.name]
    if not groups:
        raise Reader(file).bad("$", "no job ran: an empty pipeline")
    if stages is None:
        first_id: dict[str, int] = {}
        for g in groups.values():
            ids = [j.id if isinstance(j.id, int) else 0 for j in g.jobs]
            first_id[g.stage] = min(first_id.get(g.stage, min(ids)), min(ids))
        stages = sorted(first_id, key=lambda s: first_id[s])
    stage_index = {s: i for i, s in enumerate(stages)}

    # Each execution: its attempts (jobs of one name, in id order).
    t0 = min(j.created for j in jobs)
    executions_of: dict[str, dict[str | None, list[Job]]] = {}
    for g in groups.values():
        by_target: dict[str | None, list[Job]] = {}
        for j in g.jobs:
            by_target.setdefault(j.name if g.matrix else None, []).append(j)
        executions_of[g.name] = by_target
    ended = {g.name: max([j.finished for j in g.jobs if j.finished is not None] or [j.created for j in g.jobs]) for g in groups.values()}

    # Needs inferred without the file, where the stage order cannot explain the start.
    if ci is None:
        for g in groups.values():
            earlier = [h for h in groups.values() if stage_index[h.stage] < stage_index[g.stage]]
            starts = [j.started for j in g.jobs if j.started is not None]
            if not starts or not earlier:
                continue
            queued_at = min(j.started - round((j.queued or 0) * NS) for j in g.jobs if j.started is not None)
            if queued_at < max(ended[h.name] for h in earlier):
                deps = [h for h in earlier if ended[h.name] <= queued_at]
                direct = [h.name for h in deps if not any(h.name in (o.needs or []) for o in deps if o is not h)]
                g.needs = direct
                g.inferred = True
                notes.append(f"job {g.name!r} started before the earlier stages had finished: needs {direct} (inferred)")

    order = sorted(groups.values(), key=lambda g: (stage_index[g.stage], g.needs is not None, min(j.id if isinstance(j.id, int) else 0 for j in g.jobs)))
    order = _needs_after(order)
    prereqs: dict[str, list[str]] = {}
    for g in order:
        if g.needs is not None:
            prereqs[g.name] = [n for n in g.needs if n in groups]
        else:
            prereqs[g.name] = [h.name for h in order if stage_index[h.stage] < stage_index[g.stage]]

    # A failure sets the error flag only when it is the execution's last attempt.
    failed_at = [
        tries[-1].finished
        for by_target in executions_of.values()
        for tries in by_target.values()
        if tries[-1].status == "failed" and not tries[-1].allow_failure and tries[-1].finished is not None
    ]
    records: list[StepRecord] = []
    specs: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    resources: dict[str, int] = {}
    kept: list[Group] = []
    allowed: list[str] = []
    queued: list[float] = []
    previous_stage_first: dict[str, str] = {}
    ready_of: dict[str, int] = {}
    passes_on: dict[str, list[str]] = {}  # a job left out: what those that need it wait for instead
    for g in order:
        effective: list[str] = []
        for n in prereqs[g.name]:
            for m in passes_on.get(n, [n]):
                if m not in effective:
                    effective.append(m)
        ready = max([t0] + [ended[n] for n in effective])
        skipped = all(j.status == "skipped" for j in g.jobs)
        if skipped:
            if not rules_skip(g.condition, failed_at, ready):
                notes.append(f"job {g.name!r} was skipped by a rule the scenario cannot express: left out")
                passes_on[g.name] = effective
                continue
        kept.append(g)
        ready_of[g.name] = ready
        if skipped:
            ended[g.name] = ready  # a skip is decided when what it waits for has ended
        spec: dict[str, Any] = {"name": g.name}
        if g.needs is not None:
            spec["depends_on"] = [n for n in effective if n in ready_of]
        elif g.stage in previous_stage_first:
            spec["start"] = "with-previous"
        else:
            previous_stage_first[g.stage] = g.name
        if g.condition != "success":
            spec["condition"] = g.condition
        if g.retry:
            spec["retries"] = g.retry
        if g.resource_group:
            resources[g.resource_group] = 1
            spec["uses"] = {g.resource_group: 1}
        if g.matrix:
            spec["roles"] = [g.name]
        specs.append(spec)

    # Attempt starts under the rules, in the order the jobs really started (for the
    # resource groups): ready, after the execution's previous attempt, the group free.
    starts: dict[int, int] = {}
    resource_free: dict[str, int] = {}
    previous_end: dict[tuple[str, str | None], int] = {}
    ran = [(g, target, j) for g in kept for target, tries in executions_of[g.name].items() for j in tries if j.started is not None and j.finished is not None]
    # (With capacity 1, of two jobs that started at one instant the one that ended first held it first.)
    for g, target, j in sorted(ran, key=lambda x: (x[2].started, x[2].finished, x[2].id if isinstance(x[2].id, int) else 0)):
        start = max(ready_of[g.name], previous_end.get((g.name, target), t0))
        if g.resource_group is not None:
            start = max(start, resource_free.get(g.resource_group, t0))
        if j.finished < start:
            notes.append(f"job {j.name!r} finished before the rules would have started it ({wall_of(j.finished)}): taken as 0 s")
            start = j.finished
        starts[id(j)] = start
        previous_end[(g.name, target)] = j.finished
        if g.resource_group is not None:
            resource_free[g.resource_group] = j.finished

    for g in kept:
        executions: list[Execution] = []
        by_target = executions_of[g.name]
        ordered = sorted(by_target.items(), key=lambda kv: min(j.id if isinstance(j.id, int) else 0 for j in kv[1]))
        for target, attempts_jobs in ordered:
            if target is not None:
                targets.append({"name": target, "roles": [g.name]})
            attempts: list[Attempt] = []
            for j in attempts_jobs:
                if id(j) not in starts:
                    continue
                outcome = j.status
                if outcome == "failed" and j.allow_failure:
                    outcome = "succeeded"
                    allowed.append(j.name)
                attempts.append(Attempt(starts[id(j)], j.finished, outcome))
                if j.queued is not None:
                    queued.append(j.queued)
            executions.append(Execution(target, attempts))
        skipped = all(j.status == "skipped" for j in g.jobs)
        outcomes = {a.outcome for e in executions for a in e.attempts[-1:]}
        outcome = "skipped" if skipped else "failed" if "failed" in outcomes else "cancelled" if "cancelled" in outcomes else "succeeded"
        ready = ready_of[g.name]
        records.append(
            StepRecord(name=g.name, outcome=outcome, start=ready, end=max([ready] + [a.end for e in executions for a in e.attempts]), executions=executions, reason="skipped in the record" if skipped else None)
        )
    if not records:
        raise Reader(file).bad("$", "no job ran: an empty pipeline")
    # depends_on names only earlier steps; stage order with needs last within a stage gives that.
    scenario: dict[str, Any] = {"name": _pipeline_name(jobs)}
    width = max((len(r.executions) for r in records), default=1)
    policy = {}
    if len(specs) > 10:
        policy["max_parallel_steps"] = len(specs)
    if width > 10:
        policy["max_parallel_targets"] = width
    if policy:
        scenario["policy"] = policy
    if resources:
        scenario["resources"] = resources
    scenario["targets"] = targets
    scenario["steps"] = specs
    if allowed:
        notes.append(f"{', '.join(map(repr, allowed))} failed but {'was' if len(allowed) == 1 else 'were'} allowed to fail: recorded as succeeded")
    if queued:
        notes.append(
            f"queue: jobs waited {statistics.median(queued):g}s for a runner (median of queued_duration), at most "
            f"{max(queued):g}s; each wait is in its job's time"
        )
    failed = any(r.outcome == "failed" for r in records)
    cancelled = any(r.outcome == "cancelled" for r in records)
    pipeline = _pipeline_id(jobs)
    record = Record(
        tool="gitlab",
        id=f"gitlab-{pipeline}",
        start=t0,
        end=max([r.end for r in records if r.end is not None] + [t0]),
        outcome="failed" if failed else "cancelled" if cancelled else "succeeded",
        steps=records,
        options={
            "imported_from": "gitlab",
            "pipeline": pipeline,
            "queue_model": "an attempt runs from when the rules would start the job to its finished_at",
            "inferred_dependencies": [f"{g.name} <- {', '.join(g.needs or [])}" for g in order if g.inferred],
        },
    )
    return finish(scenario, record, notes, file)


def _needs_after(order: list[Group]) -> list[Group]:
    """Move each job with `needs` after the jobs it needs (GitLab allows needs within a
    stage): a stable topological order."""
    placed: list[Group] = []
    names: set[str] = set()
    pending = list(order)
    all_names = {g.name for g in order}
    while pending:
        for i, g in enumerate(pending):
            if all(n in names or n not in all_names for n in g.needs or []):
                placed.append(g)
                names.add(g.name)
                del pending[i]
                break
        else:  # a cycle: GitLab refuses those; keep the given order
            placed += pending
            break
    return placed


def _pipeline_id(jobs: list[Job]) -> Any:
    """The pipeline's id, from its jobs (else the first job's id stands for it)."""
    ids = [j.pipeline for j in jobs if j.pipeline is not None]
    if ids:
        return ids[0]
    numbered = [j.id for j in jobs if isinstance(j.id, int)]
    return min(numbered) if numbered else "pipeline"


def _pipeline_name(jobs: list[Job]) -> str:
    refs = [j.ref for j in jobs if isinstance(j.ref, str)]
    return f"pipeline {_pipeline_id(jobs)}" + (f" ({refs[0]})" if refs else "")
