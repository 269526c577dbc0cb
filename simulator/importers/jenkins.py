"""Jenkins Pipeline: a run's stages (Stage View) or nodes (Blue Ocean) in, a scenario and
the recorded event log out.

Files, told apart by their shape:
- Pipeline Stage View, `wfapi/describe` (one run: `stages[]` with `name`, `status`,
  `startTimeMillis`, `durationMillis`, `pauseDurationMillis`; the run's
  `startTimeMillis`, `endTimeMillis`, `queueDurationMillis`), or `wfapi/runs` (a list of
  such runs: the latest is imported, or every one with `--merge`);
- Blue Ocean, `.../runs/N/nodes/` (`displayName`, `type` STAGE or PARALLEL, `startTime`,
  `durationInMillis`, `result`, `state`, `edges`, `firstParent`).

Mapping: the stages one after another, each a server step; the branches of a `parallel`
(Blue Ocean) are steps side by side (`STAGE / BRANCH`, with-previous). A stage Jenkins
did not execute (`NOT_EXECUTED`: a restart from a later stage, a `when` that was false)
is left out, with a note, unless an earlier failure explains the skip.

Queue time: a run waits in the queue for an executor (`queueDurationMillis`) before its
first stage; a stage may wait for input (`pauseDurationMillis`, an approval). Both are
in the record, and both go with the stage they precede or pause: a stage's attempt runs
from the moment the rules would start it (the run's start, or the end of the stages
before it) to its recorded end. Older Blue Ocean replies carry no node durations: a
node then lasts until the next one starts (its edge's `durationInMillis`), and the last
node's length is unknown (0, with a note).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

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
)

Doc = tuple[str, Any]

STAGE_STATUS = {"SUCCESS": "succeeded", "UNSTABLE": "succeeded", "FAILED": "failed", "FAILURE": "failed", "ABORTED": "cancelled", "NOT_EXECUTED": "skipped", "NOT_BUILT": "skipped", "SKIPPED": "skipped"}
UNFINISHED = ("IN_PROGRESS", "PAUSED_PENDING_INPUT", "RUNNING", "QUEUED", "PAUSED", "PAUSED_PENDING_INPUT")
MS = 1_000_000


def convert(doc: Doc, every_run: bool = False) -> list[Imported]:
    """Import a Jenkins run (or, `every_run`, each run of a `wfapi/runs` reply)."""
    file, data = doc
    r = Reader(file)
    if isinstance(data, dict) and "stages" in data:
        return [_wfapi_run(r, data, "$")]
    if isinstance(data, list) and data and all(isinstance(x, dict) and "stages" in x for x in data):
        if every_run:
            return [_wfapi_run(r, run, item("$", i)) for i, run in enumerate(data)]
        i = max(range(len(data)), key=lambda k: (data[k].get("startTimeMillis") or 0, -k))
        result = _wfapi_run(r, data[i], item("$", i))
        if len(data) > 1:
            result.notes.insert(0, f"{file} holds {len(data)} runs: imported the latest, {data[i].get('name', i)} (--merge folds them all)")
        return [result]
    if isinstance(data, list) and data and all(isinstance(x, dict) and ("edges" in x or "displayName" in x) for x in data):
        return [_blue_ocean(r, data)]
    if isinstance(data, list) and not data:
        raise r.bad("$", "an empty list: no run to import")
    raise r.bad("$", "expected a Stage View run (wfapi/describe), a list of them (wfapi/runs), or Blue Ocean nodes")


def _status(r: Reader, obj: dict, name: str, path: str) -> str:
    status = r.text(obj, name, path)
    if status in UNFINISHED:
        raise r.bad(key(path, name), f"{status}: the run has not finished; import it once it has")
    if status not in STAGE_STATUS:
        raise r.bad(key(path, name), f"expected one of {', '.join(STAGE_STATUS)}, got {status!r}")
    return STAGE_STATUS[status]


def _job_and_number(run: dict) -> tuple[str | None, str]:
    """(`cd`, `3`) from a run whose link is `/job/cd/3/wfapi/describe` and name `#3`."""
    links = run.get("_links") if isinstance(run.get("_links"), dict) else {}
    href = (links.get("self") or {}).get("href") if isinstance(links.get("self"), dict) else None
    number = str(run.get("name", run.get("id", "run"))).lstrip("#")
    if isinstance(href, str):
        parts = [p for p in urlparse(href).path.split("/") if p]
        jobs = [parts[i + 1] for i, p in enumerate(parts[:-1]) if p == "job"]
        if jobs:
            return "/".join(jobs), number
    return None, number


def _wfapi_run(r: Reader, run: dict, path: str) -> Imported:
    notes: list[str] = []
    outcome = _status(r, run, "status", path)
    start = r.millis(run, "startTimeMillis", path)
    queue = r.millis(run, "queueDurationMillis", path, optional=True) or 0
    duration = r.millis(run, "durationMillis", path)
    end = r.millis(run, "endTimeMillis", path, optional=True)
    assert start is not None and duration is not None
    if end is None:
        end = start + queue + duration
    if end < start:
        raise r.bad(key(path, "endTimeMillis"), "before startTimeMillis")
    stages = r.items(r.field(run, "stages", path), key(path, "stages"))
    if not stages:
        raise r.bad(key(path, "stages"), "no stages: an empty run")
    records: list[StepRecord] = []
    specs: list[dict[str, Any]] = []
    ready = start
    error = False
    seen: set[str] = set()
    for i, raw in enumerate(stages):
        p = item(key(path, "stages"), i)
        stage = r.obj(raw, p)
        name = r.text(stage, "name", p)
        if name in seen:
            raise r.bad(key(p, "name"), f"stage {name!r} appears twice")
        seen.add(name)
        status = _status(r, stage, "status", p)
        if status == "skipped":
            if error:
                records.append(StepRecord(name=name, outcome="skipped", start=ready, end=ready, reason="an earlier stage failed"))
                specs.append({"name": name})
            else:
                notes.append(f"stage {name!r} was not executed (a restart from a later stage, or a false `when`): left out")
            continue
        s_start = r.millis(stage, "startTimeMillis", p)
        s_duration = r.millis(stage, "durationMillis", p)
        pause = r.millis(stage, "pauseDurationMillis", p, optional=True) or 0
        assert s_start is not None and s_duration is not None
        s_end = s_start + s_duration
        if s_start < start:
            raise r.bad(key(p, "startTimeMillis"), "before the run started")
        if pause:
            notes.append(f"stage {name!r} paused {pause / NS:g}s for input: kept in its time")
        attempt_start = min(ready, s_end)
        records.append(StepRecord(name=name, outcome=status, start=attempt_start, end=s_end, executions=[Execution(None, [Attempt(attempt_start, s_end, status)])]))
        specs.append({"name": name})
        ready = max(ready, s_end)
        error = error or status == "failed"
    if not records:
        raise r.bad(key(path, "stages"), "no stage was executed: an empty run")
    if queue:
        notes.append(f"the run waited {queue / NS:g}s in the queue for an executor: kept in the time of its first stage")
    job, number = _job_and_number(run)
    scenario = {"name": f"{job} #{number}" if job else f"#{number}", "steps": specs}
    record = Record(
        tool="jenkins",
        id=f"jenkins-{job.replace('/', '-')}-{number}" if job else f"jenkins-{number}",
        start=start,
        end=max(end, ready),
        outcome=outcome if outcome in ("succeeded", "failed", "cancelled") else "succeeded",
        steps=records,
        options={"imported_from": "jenkins", "run": run.get("name"), "queue_model": "an attempt runs from when the rules would start the stage to its end"},
    )
    return finish(scenario, record, notes, r.file)


class _Node:
    __slots__ = ("id", "name", "type", "start", "duration", "outcome", "edges", "edge_ms", "parent", "path")

    def __init__(self, **kw: Any):
        for k, v in kw.items():
            setattr(self, k, v)


def _blue_ocean(r: Reader, data: list) -> Imported:
    notes: list[str] = []
    nodes: dict[str, _Node] = {}
    for i, raw in enumerate(data):
        p = item("$", i)
        n = r.obj(raw, p)
        node_id = str(r.field(n, "id", p))
        if node_id in nodes:
            raise r.bad(key(p, "id"), f"node {node_id} appears twice")
        name = r.text(n, "displayName", p)
        state = n.get("state")
        if isinstance(state, str) and state in UNFINISHED:
            raise r.bad(key(p, "state"), f"{state}: the run has not finished; import it once it has")
        result = n.get("result")
        if state in ("SKIPPED", "NOT_BUILT") or result in ("NOT_BUILT", None) and n.get("startTime") is None:
            outcome = "skipped"
        else:
            outcome = _status(r, n, "result", p)
        start = r.time(n, "startTime", p, optional=outcome == "skipped")
        duration = r.millis(n, "durationInMillis", p, optional=True)
        edges = r.items(n.get("edges") or [], key(p, "edges"))
        targets = []
        edge_ms = []
        for j, e in enumerate(edges):
            ep = item(key(p, "edges"), j)
            edge = r.obj(e, ep)
            targets.append(str(r.field(edge, "id", ep)))
            ms = r.millis(edge, "durationInMillis", ep, optional=True)
            if ms is not None:
                edge_ms.append(ms)
        kind = n.get("type") if isinstance(n.get("type"), str) else None
        parent = n.get("firstParent")
        nodes[node_id] = _Node(id=node_id, name=name, type=kind, start=start, duration=duration, outcome=outcome, edges=targets, edge_ms=edge_ms, parent=str(parent) if parent is not None else None, path=p)
    if not nodes:
        raise r.bad("$", "no nodes: an empty run")
    for n in nodes.values():
        for t in n.edges:
            if t not in nodes:
                raise r.bad(key(n.path, "edges"), f"an edge to node {t}, which is not in the reply")

    def branches(n: _Node) -> list[_Node]:
        kids = [nodes[t] for t in n.edges]
        if kids and (all(k.type == "PARALLEL" for k in kids) or all(k.parent == n.id for k in kids) or (len(kids) > 1 and all(k.type is None for k in kids))):
            return kids
        return []

    targeted = {t for n in nodes.values() for t in n.edges}
    heads = [n for n in nodes.values() if n.id not in targeted and n.type != "PARALLEL"]
    if not heads:
        raise r.bad("$", "no first stage (every node is the target of an edge)")
    blocks: list[tuple[str, list[_Node]]] = []  # (stage name, the nodes that run: itself or its branches)
    current: _Node | None = heads[0]
    visited: set[str] = set()
    while current is not None and current.id not in visited:
        visited.add(current.id)
        kids = branches(current)
        if kids:
            blocks.append((current.name, kids))
            nxt = {t for k in kids for t in k.edges}
        else:
            blocks.append((current.name, [current]))
            nxt = set(current.edges)
        current = nodes[sorted(nxt)[0]] if nxt else None
        if len(nxt) > 1:
            notes.append(f"after {blocks[-1][0]!r} the pipeline forks in a way Blue Ocean does not draw: followed node {current.name if current else '?'!r}")
    starts = [n.start for _, ns in blocks for n in ns if n.start is not None]
    if not starts:
        raise r.bad("$", "no node ever started: an empty run")
    t0 = min(starts)
    records: list[StepRecord] = []
    specs: list[dict[str, Any]] = []
    ready = t0
    error = False
    for b, (stage, members) in enumerate(blocks):
        next_start = min((n.start for _, ns in blocks[b + 1 :] for n in ns if n.start is not None), default=None)
        block_end = ready
        first = True
        for n in members:
            name = n.name if len(members) == 1 and n.name == stage else f"{stage} / {n.name}"
            if n.outcome == "skipped":
                if error:
                    records.append(StepRecord(name=name, outcome="skipped", start=ready, end=ready, reason="an earlier stage failed"))
                    specs.append({"name": name} if first else {"name": name, "start": "with-previous"})
                    first = False
                else:
                    notes.append(f"{name!r} was not built (a false `when`?): left out")
                continue
            assert n.start is not None
            if n.duration is not None:
                end = n.start + n.duration
            elif len(n.edge_ms) == 1:
                end = n.start + n.edge_ms[0]
            elif next_start is not None and next_start >= n.start:
                end = next_start
            else:
                end = n.start
                notes.append(f"{name!r}: the reply gives no duration for it: taken as 0 s")
            start = min(ready, end)
            records.append(StepRecord(name=name, outcome=n.outcome, start=start, end=end, executions=[Execution(None, [Attempt(start, end, n.outcome)])]))
            specs.append({"name": name} if first else {"name": name, "start": "with-previous"})
            first = False
            block_end = max(block_end, end)
            error = error or n.outcome == "failed"
        ready = block_end
    if not records:
        raise r.bad("$", "no stage ran: an empty run")
    width = max(len(m) for _, m in blocks)
    scenario: dict[str, Any] = {"name": "Jenkins pipeline run"}
    if width > 10:
        scenario["policy"] = {"max_parallel_steps": width}
    scenario["steps"] = specs
    failed = any(s.outcome == "failed" for s in records)
    cancelled = any(s.outcome == "cancelled" for s in records)
    record = Record(
        tool="jenkins",
        id="jenkins-blueocean-run",
        start=t0,
        end=max(s.end for s in records if s.end is not None),
        outcome="failed" if failed else "cancelled" if cancelled else "succeeded",
        steps=records,
        options={"imported_from": "jenkins", "format": "blue ocean nodes", "queue_model": "an attempt runs from when the rules would start the stage to its end"},
    )
    return finish(scenario, record, notes, r.file)
