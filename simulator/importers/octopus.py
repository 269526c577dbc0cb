"""Octopus Deploy: a deployment's task log (+ its process, machines, variables) in,
a scenario and the recorded event log out.

Files (all optional but the task log):
- task details, `/api/tasks/{id}/details`: `Task` (`Id`, `Description`, `State`,
  `StartTime`, `CompletedTime`) and `ActivityLogs`, a tree: the deployment; under it one
  node per step (`Step N: NAME`, plus nodes Octopus inserts such as `Acquire packages`);
  under a step one node per deployment target named after the machine, or `Octopus
  Server` / `Worker` for a step that runs on the server. Each node: `Name`, `Status`,
  `Started`, `Ended`, `Children`.
- the deployment process, `/api/deploymentprocesses/{id}` JSON (`Steps[]`: `Name`,
  `StartTrigger`, `Condition`, `Properties`, `Actions[].Properties`) or the
  Config-as-Code `deployment_process.ocl` (`step` blocks: `name`, `start_trigger`,
  `condition`, `properties`, `action`), parsed by the command line;
- machines, `/api/machines` (`Items[]`: `Name`, `Roles`; one page, a list of pages, or
  a plain list);
- project variables, `/api/variables/{id}` (`Variables[]`: `Name`, `Value`).

Mapping: step nodes are matched to process steps by name; a node that is no process
step and is one Octopus inserts (`Acquire packages`, retention policies) becomes a
server step in its place; any other unmatched node is bad input. Process steps with no
node (excluded from this environment or channel, or disabled) are left out, and a
skipped step the rules would not have skipped (a variable condition) too, with a note.
Each target node is one execution from its `Started` to its `Ended` (Octopus keeps no
per-attempt record: one attempt). Start triggers, conditions (`Variable` runs as
`success`), roles (`Octopus.Action.TargetRoles`) and the rolling window
(`Octopus.Action.MaxParallelism` on a step) come from the process; the project
variables `Octopus.Action.MaxParallelism` and `OctopusBypassDeploymentMutex` are kept as
the scenario's variables, which set its policy as they do in Octopus. Targets are
declared in the order the task log lists them. Without the process, steps come from the
nodes, each step's role is named after it, and start triggers and conditions are
inferred from the times (and said to be).

A node's `Started` is taken as the moment its execution began: an Octopus log that
shows a target waiting for the deployment mutex inside its node counts that wait as
work (and replay reports the overlap). Times keep the log's precision.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

from simulator.importers.record import (
    Attempt,
    Execution,
    Imported,
    Reader,
    Record,
    RecordError,
    StepRecord,
    finish,
    item,
    key,
    missing_pages,
    page_list,
    parse_time,
    rules_skip,
    split_pages,
    wall_of,
)

Doc = tuple[str, Any]  # (file name, parsed contents)

INSERTED = ("Acquire packages", "Apply retention policy on Tentacles", "Apply retention policies", "Retention policies")
SERVER_NODES = ("Octopus Server", "Worker")
MAX_PARALLELISM = "Octopus.Action.MaxParallelism"
BYPASS_MUTEX = "OctopusBypassDeploymentMutex"
TARGET_ROLES = "Octopus.Action.TargetRoles"
RUN_ON_SERVER = "Octopus.Action.RunOnServer"

NODE_OUTCOME = {
    "Success": "succeeded",
    "SuccessWithWarning": "succeeded",
    "Failed": "failed",
    "Canceled": "cancelled",
    "Cancelled": "cancelled",
    "TimedOut": "failed",
    "Skipped": "skipped",
    "Pending": "skipped",  # in a finished task: a node that never ran
}
UNFINISHED = ("Running", "Queued", "Executing", "Cancelling")
START = {"StartAfterPrevious": "after-previous", "StartWithPrevious": "with-previous"}
CONDITION = {"Success": "success", "Failure": "failure", "Always": "always", "Variable": "success"}


class ProcessStep:
    __slots__ = ("name", "start", "condition", "roles", "window", "server", "disabled", "path", "variable_condition")

    def __init__(self, name: str, path: str):
        self.name = name
        self.path = path
        self.start = "after-previous"
        self.condition = "success"
        self.variable_condition = False
        self.roles: list[str] = []
        self.window: int | None = None
        self.server = False
        self.disabled = False


def step_name(node_name: str) -> tuple[str, bool]:
    """`Step 3: Deploy web` -> ('Deploy web', True); `Acquire packages` -> (same, False)."""
    head, sep, rest = node_name.partition(": ")
    if sep and head.startswith("Step ") and head[5:].replace(".", "").isdigit() and rest:
        return rest, True
    return node_name, False


def _property(r: Reader, props: dict, name: str, path: str) -> str | None:
    value = props.get(name)
    if isinstance(value, dict):  # PropertyValueResource: {"Value": ..., "IsSensitive": ...}
        value = value.get("Value")
    if value is None:
        return None
    if isinstance(value, bool):
        return "True" if value else "False"
    if not isinstance(value, str | int | float):
        raise r.bad(key(path, name), f"expected a string, got {type(value).__name__}")
    return str(value)


def _window(r: Reader, text: str | None, path: str, notes: list[str], where: str) -> int | None:
    if text is None or not text.strip():
        return None
    if "#{" in text:
        notes.append(f"{where}: {MAX_PARALLELISM} is {text!r}, a variable abreast cannot evaluate: the step's window is left unset")
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise r.bad(path, f"expected an integer >= 1, got {text!r}")
    return int(text)


def _roles(text: str | None) -> list[str]:
    return [r.strip() for r in (text or "").split(",") if r.strip()]


def read_process_json(doc: Doc, notes: list[str]) -> list[ProcessStep]:
    file, data = doc
    r = Reader(file)
    top = r.obj(data, "$")
    steps = r.items(r.field(top, "Steps", "$"), "$.Steps")
    out = []
    for i, raw in enumerate(steps):
        p = item("$.Steps", i)
        s = r.obj(raw, p)
        step = ProcessStep(r.text(s, "Name", p), p)
        _trigger_and_condition(r, step, s.get("StartTrigger"), s.get("Condition"), key(p, "StartTrigger"), key(p, "Condition"))
        props = s.get("Properties") or {}
        props = r.obj(props, key(p, "Properties"))
        step.roles = _roles(_property(r, props, TARGET_ROLES, key(p, "Properties")))
        step.window = _window(r, _property(r, props, MAX_PARALLELISM, key(p, "Properties")), key(key(p, "Properties"), MAX_PARALLELISM), notes, step.name)
        actions = r.items(s.get("Actions") or [], key(p, "Actions"))
        enabled = []
        for j, a in enumerate(actions):
            ap = item(key(p, "Actions"), j)
            action = r.obj(a, ap)
            if action.get("IsDisabled") is True:
                continue
            aprops = r.obj(action.get("Properties") or {}, key(ap, "Properties"))
            enabled.append((_property(r, aprops, RUN_ON_SERVER, key(ap, "Properties")) or "false").strip().lower() == "true")
        step.disabled = bool(actions) and not enabled
        step.server = not step.roles or (bool(enabled) and all(enabled))
        out.append(step)
    return out


def _trigger_and_condition(r: Reader, step: ProcessStep, trigger: Any, condition: Any, tpath: str, cpath: str) -> None:
    if trigger is not None:
        if trigger not in START:
            raise r.bad(tpath, f"expected StartAfterPrevious or StartWithPrevious, got {trigger!r}")
        step.start = START[trigger]
    if condition is not None:
        if condition not in CONDITION:
            raise r.bad(cpath, f"expected Success, Failure, Always or Variable, got {condition!r}")
        step.condition = CONDITION[condition]
        step.variable_condition = condition == "Variable"


def _blocks(value: Any) -> list[tuple[str | None, dict]]:
    """python-hcl2's blocks: `[{label: body}]` or `[body]` (a body has `__is_block__`)."""
    out: list[tuple[str | None, dict]] = []
    for b in value if isinstance(value, list) else [value]:
        if not isinstance(b, dict):
            continue
        if b.get("__is_block__"):
            out.append((None, b))
        elif len(b) == 1:
            label, body = next(iter(b.items()))
            if isinstance(body, dict):
                out.append((label, body))
    return out


def read_process_ocl(doc: Doc, notes: list[str]) -> list[ProcessStep]:
    file, data = doc
    r = Reader(file)
    top = r.obj(data, "$")
    out = []
    for label, body in _blocks(top.get("step", [])):
        p = key("$.step", label) if label is not None else "$.step"
        name = body.get("name", label)
        if not isinstance(name, str) or not name:
            raise r.bad(key(p, "name"), f"expected a step name, got {name!r}")
        step = ProcessStep(name, p)
        _trigger_and_condition(r, step, body.get("start_trigger"), body.get("condition"), key(p, "start_trigger"), key(p, "condition"))
        props = r.obj(body.get("properties") or {}, key(p, "properties"))
        step.roles = _roles(_property(r, props, TARGET_ROLES, key(p, "properties")))
        step.window = _window(r, _property(r, props, MAX_PARALLELISM, key(p, "properties")), key(key(p, "properties"), MAX_PARALLELISM), notes, name)
        actions = _blocks(body.get("action", []))
        enabled = []
        for a_label, action in actions:
            ap = key(key(p, "action"), a_label) if a_label else key(p, "action")
            if action.get("is_disabled") in (True, "true", "True"):
                continue
            aprops = r.obj(action.get("properties") or {}, key(ap, "properties"))
            enabled.append((_property(r, aprops, RUN_ON_SERVER, key(ap, "properties")) or "false").strip().lower() == "true")
        step.disabled = bool(actions) and not enabled
        step.server = not step.roles or (bool(enabled) and all(enabled))
        out.append(step)
    if not out:
        raise r.bad("$", "no `step` blocks: expected a deployment process")
    return out


def read_machines(doc: Doc) -> dict[str, list[str]]:
    """Machine name -> roles, from one page, a list of pages or a list of machines; a
    reply missing pages is bad input naming them."""
    file, data = doc
    r = Reader(file)
    pages, machines = split_pages(r, data, "Items")
    totals = []
    counts = []
    numbers: list[int | None] = []
    per_page = None
    for p, page in pages:
        items = r.items(r.field(page, "Items", p), key(p, "Items"))
        machines += [(item(key(p, "Items"), i), m) for i, m in enumerate(items)]
        total = page.get("TotalResults")
        if isinstance(total, int) and not isinstance(total, bool):
            totals.append(total)
        counts.append(len(items))
        size = page.get("ItemsPerPage")
        per_page = size if isinstance(size, int) and size > 0 else per_page
        current = (page.get("Links") or {}).get("Page.Current") if isinstance(page.get("Links"), dict) else None
        number = None
        if isinstance(current, str) and per_page:
            query = parse_qs(urlparse(current).query)
            skip = query.get("skip", [None])[0]
            if skip is not None and skip.isdigit():
                number = int(skip) // per_page + 1
        numbers.append(number)
    if totals:
        missing = missing_pages(max(totals), counts, numbers, per_page)
        if missing:
            raise r.bad(
                "$",
                f"a paged reply with {sum(counts)} of {max(totals)} machines (TotalResults): {page_list(missing)} "
                f"missing; fetch them (skip/take) and give all the pages as a list",
            )
    out: dict[str, list[str]] = {}
    for p, raw in machines:
        m = r.obj(raw, p)
        name = r.text(m, "Name", p)
        roles = r.items(m.get("Roles") or [], key(p, "Roles"))
        for j, role in enumerate(roles):
            if not isinstance(role, str) or not role:
                raise r.bad(item(key(p, "Roles"), j), f"expected a role name, got {role!r}")
        if name in out:
            raise r.bad(key(p, "Name"), f"machine {name!r} is listed twice")
        out[name] = list(roles)
    return out


def read_variables(doc: Doc, notes: list[str]) -> dict[str, str]:
    """The two variables that shape scheduling, as the scenario's variables."""
    file, data = doc
    r = Reader(file)
    top = r.obj(data, "$")
    found: dict[str, list[tuple[str, str, bool]]] = {}
    for i, raw in enumerate(r.items(r.field(top, "Variables", "$"), "$.Variables")):
        p = item("$.Variables", i)
        v = r.obj(raw, p)
        name = r.text(v, "Name", p)
        if name not in (MAX_PARALLELISM, BYPASS_MUTEX):
            continue
        value = v.get("Value")
        if isinstance(value, bool):
            value = "True" if value else "False"
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise r.bad(key(p, "Value"), f"expected a string, got {value!r}")
        scope = v.get("Scope") or {}
        scoped = isinstance(scope, dict) and any(scope.values())
        found.setdefault(name, []).append((str(value), key(p, "Value"), scoped))
    out: dict[str, str] = {}
    for name, values in found.items():
        unscoped = [x for x in values if not x[2]]
        value, path, _ = (unscoped or values)[0]
        if len(values) > 1:
            notes.append(f"{file}: {name} has {len(values)} values (scoped); using {value!r}")
        if "#{" in value:
            notes.append(f"{file}: {name} is {value!r}, which abreast cannot evaluate: left out")
            continue
        if name == MAX_PARALLELISM and (not value.strip().isdigit() or int(value) < 1):
            raise r.bad(path, f"expected an integer >= 1, got {value!r}")
        if name == BYPASS_MUTEX and value.strip().lower() not in ("true", "false", "1", "0", "yes", "no", ""):
            raise r.bad(path, f"expected True or False, got {value!r}")
        out[name] = value
    return out


class _Node:
    __slots__ = ("name", "status", "start", "end", "children", "parent", "index")

    def __init__(self, name: str, status: str, start: int | None, end: int | None, children: list, parent: str, index: int):
        self.name, self.status, self.start, self.end, self.children = name, status, start, end, children
        self.parent, self.index = parent, index

    @property
    def path(self) -> str:
        return item(self.parent, self.index)


def _node(r: Reader, raw: Any, parent: str, index: int) -> _Node:
    """One node of the task log, checked (paths are built only to report a problem: a
    large log has hundreds of thousands of nodes)."""
    n = raw if type(raw) is dict else r.obj(raw, item(parent, index))
    name, status = n.get("Name"), n.get("Status")
    if type(name) is not str or not name or type(status) is not str or status not in NODE_OUTCOME:
        path = item(parent, index)
        r.text(n, "Name", path)
        status = r.text(n, "Status", path)
        if status in UNFINISHED:
            raise r.bad(key(path, "Status"), f"{status}: the deployment has not finished; import it once it has")
        raise r.bad(key(path, "Status"), f"expected one of {', '.join(NODE_OUTCOME)}, got {status!r}")
    ran = status not in ("Skipped", "Pending")
    started, ended = n.get("Started"), n.get("Ended")
    start = parse_time(started) if type(started) is str else None
    end = parse_time(ended) if type(ended) is str else None
    if (start is None and (ran or started is not None)) or (end is None and (ran or ended is not None)):
        path = item(parent, index)
        start = r.time(n, "Started", path, optional=not ran)
        end = r.time(n, "Ended", path, optional=not ran)
    if start is not None and end is not None and end < start:
        raise r.bad(key(item(parent, index), "Ended"), f"ends before it started ({wall_of(end)} < {wall_of(start)})")
    children = n.get("Children")
    if children is None:
        children = []
    elif type(children) is not list:
        r.items(children, key(item(parent, index), "Children"))
    return _Node(name, status, start, end, children, parent, index)


_SERVER_PREFIXES = ("Octopus Server", "Worker ", "Worker:")


def _is_server(name: str) -> bool:
    return name == "Worker" or name.startswith(_SERVER_PREFIXES)


def convert(task: Doc, process: Doc | None = None, process_is_ocl: bool = False, machines: Doc | None = None, variables: Doc | None = None) -> Imported:
    """Import one Octopus deployment (see the module docstring)."""
    notes: list[str] = []
    file, data = task
    r = Reader(file)
    top = r.obj(data, "$")
    info = top.get("Task") if isinstance(top.get("Task"), dict) else {}
    logs = r.items(r.field(top, "ActivityLogs", "$"), "$.ActivityLogs")
    if not logs:
        raise r.bad("$.ActivityLogs", "empty: the task log holds no deployment")
    root = _node(r, logs[0], "$.ActivityLogs", 0)
    if root.status == "Pending":
        raise r.bad("$.ActivityLogs[0].Status", "Pending: the deployment has not started; import it once it has finished")
    if not root.children:
        raise r.bad(key(root.path, "Children"), "no steps: an empty run (the deployment did nothing to import)")
    steps_of = (read_process_ocl if process_is_ocl else read_process_json)(process, notes) if process is not None else None
    machine_roles = read_machines(machines) if machines is not None else None
    variable_values = read_variables(variables, notes) if variables is not None else {}
    by_name = {s.name: s for s in steps_of} if steps_of is not None else {}

    task_id = info.get("Id") if isinstance(info.get("Id"), str) else None
    # The deployment's span: its node's, else the task's, else its steps'.
    start0 = root.start if root.start is not None else r.time(info, "StartTime", "$.Task", optional=True)
    end0 = root.end if root.end is not None else r.time(info, "CompletedTime", "$.Task", optional=True)
    if start0 is None:
        starts = [parse_time(c["Started"]) for c in root.children if isinstance(c, dict) and isinstance(c.get("Started"), str)]
        start0 = min((x for x in starts if x is not None), default=None)

    # --- the steps, in the log's order -------------------------------------------------
    records: list[StepRecord] = []
    specs: list[dict[str, Any]] = []
    target_order: list[str] = []
    seen_targets: set[str] = set()
    per_step_targets: list[list[str]] = []
    matched: set[str] = set()
    skips: list[tuple[int, str, str, int, bool]] = []  # (place, step, condition, decided, at a known time)
    last_end = start0 if start0 is not None else 0  # when every step so far had ended
    previous_ready = last_end  # when the previous step's prerequisites had ended
    failed_before: list[int] = []  # end times of attempts that failed
    children_path = key(root.path, "Children")
    for i, raw in enumerate(root.children):
        node = _node(r, raw, children_path, i)
        p = node.path
        name, numbered = step_name(node.name)
        proc = by_name.get(name)
        inserted = False
        if proc is None:
            if node.name in INSERTED or name in INSERTED:
                inserted = True
                name = node.name
            elif steps_of is not None:
                raise r.bad(
                    key(p, "Name"),
                    f"step node {node.name!r} matches no step of {process[0] if process else 'the process'} "
                    f"and is not one Octopus inserts ({', '.join(INSERTED)})",
                )
            elif not numbered:
                raise r.bad(key(p, "Name"), f"{node.name!r} is neither a step node ('Step N: NAME') nor one Octopus inserts ({', '.join(INSERTED)})")
        if name in matched:
            raise r.bad(key(p, "Name"), f"step {name!r} appears twice in the task log")
        matched.add(name)
        outcome = NODE_OUTCOME[node.status]
        # When the rules would decide this step: a with-previous step shares the previous
        # one's prerequisites, any other waits for every step before it.
        ready = previous_ready if proc is not None and not inserted and proc.start == "with-previous" and records else last_end
        previous_ready = ready
        executions: list[Execution] = []
        targets: list[str] = []
        under: set[str] = set()
        server = inserted or (proc.server if proc is not None else False)
        grandchildren_path = key(p, "Children")
        machines_seen = False
        for j, craw in enumerate(node.children):
            child = _node(r, craw, grandchildren_path, j)
            cname = child.name
            if _is_server(cname):
                if not machines_seen and not executions and child.start is not None:
                    executions.append(Execution(None, [Attempt(child.start, child.end or child.start, _ATTEMPT_OUTCOME[child.status])]))
                continue
            if inserted:
                continue  # what Octopus did for it on each machine (uploads): one server step
            if not machines_seen:
                machines_seen = True
                executions = []  # machine nodes: the step runs on targets, not on the server
            if machine_roles is not None and cname not in machine_roles:
                raise r.bad(key(child.path, "Name"), f"machine {cname!r} is not in {machines[0] if machines else 'the machines file'}")
            if cname in under:
                raise r.bad(key(child.path, "Name"), f"machine {cname!r} appears twice under this step")
            targets.append(cname)
            under.add(cname)
            if cname not in seen_targets:
                seen_targets.add(cname)
                target_order.append(cname)
            if child.start is not None and child.status != "Skipped" and child.status != "Pending":
                executions.append(Execution(cname, [Attempt(child.start, child.end or child.start, _ATTEMPT_OUTCOME[child.status])]))
            else:
                executions.append(Execution(cname, []))
        if machines_seen:
            server = False
        elif not executions and outcome != "skipped" and (server or not (proc and proc.roles)):
            server = True
            if node.start is not None:
                executions.append(Execution(None, [Attempt(node.start, node.end or node.start, _attempt_outcome(node.status))]))
        if proc is not None and server and proc.roles and not proc.server:
            notes.append(f"step {name!r} has roles {proc.roles} but ran on the server in this record: imported as a server step")

        # A skipped step is kept only where the rules skip it too (decided once every
        # failure is known: a skip without a time may have waited for a step slot).
        if outcome == "skipped":
            condition = proc.condition if proc is not None else None
            decided = node.start if node.start is not None else ready
            if condition is None:
                condition = "success" if any(t <= decided for t in failed_before) else "failure"
                notes.append(f"step {name!r} was skipped: condition taken as {condition!r} (inferred: no process given)")
            skips.append((len(records), name, condition, decided, node.start is not None))
        records.append(
            StepRecord(
                name=name,
                outcome=outcome,
                start=node.start if node.start is not None else ready,
                end=node.end if node.end is not None else (node.start if node.start is not None else ready),
                executions=executions,
                reason="skipped in the record" if outcome == "skipped" else None,
            )
        )
        for e in executions:
            for a in e.attempts:
                if a.outcome in ("failed", "timed_out"):
                    failed_before.append(a.end)
        spec: dict[str, Any] = {"name": name}
        if proc is not None and not inserted:
            if proc.start == "with-previous":
                spec["start"] = "with-previous"
            if proc.condition != "success":
                spec["condition"] = proc.condition
            if proc.variable_condition:
                notes.append(f"step {name!r} has a variable condition: it runs as condition 'success'")
            if proc.window is not None and not server:
                spec["window"] = proc.window
        per_step_targets.append([] if server else targets)
        spec["_server"] = server
        spec["_proc_roles"] = list(proc.roles) if proc is not None and not inserted else None
        specs.append(spec)
        last_end = max(last_end, records[-1].end or last_end)
        if node.end is not None:
            last_end = max(last_end, node.end)

    if steps_of is not None:
        for s in steps_of:
            if s.name not in matched:
                why = "disabled" if s.disabled else "not in this deployment's task log (another environment or channel?)"
                notes.append(f"process step {s.name!r} is {why}: left out")

    failures = [a.end for rec in records for e in rec.executions for a in e.attempts if a.outcome in ("failed", "timed_out")]
    latest = max([rec.end for rec in records if rec.end is not None] + ([end0] if end0 is not None else []), default=0)
    dropped = set()
    for place, name, condition, decided, known in skips:
        if not rules_skip(condition, failures, decided, decided if known else latest):
            notes.append(f"step {name!r} was skipped for a reason the rules do not know (a variable condition?): left out")
            dropped.add(place)
    if dropped:
        records = [x for i, x in enumerate(records) if i not in dropped]
        specs = [x for i, x in enumerate(specs) if i not in dropped]
        per_step_targets = [x for i, x in enumerate(per_step_targets) if i not in dropped]
    if not records:
        raise r.bad(key(root.path, "Children"), "no step ran: an empty run")
    if start0 is None:
        raise r.bad("$.Task.StartTime", "the deployment has no start time: neither its node, the task nor any step has one")
    if end0 is None:
        end0 = max([rec.end for rec in records if rec.end is not None] + [start0])
    if steps_of is None:
        _infer_triggers(records, specs, notes)
        _infer_windows(records, specs, notes)
    if specs and specs[0].get("start") == "with-previous":
        del specs[0]["start"]
        notes.append(f"step {specs[0]['name']!r} starts with the previous step, but no step before it is in this deployment: after-previous")

    # --- targets and roles ---------------------------------------------------------------
    if machine_roles is not None:
        # The machines reply lists them in the order Octopus deploys to them.
        used = set(target_order)
        target_order = [m for m in machine_roles if m in used]
    else:
        target_order = _declaration_order(target_order, per_step_targets, notes)
    roles = _assign_roles(specs, per_step_targets, target_order, machine_roles, notes)
    scenario: dict[str, Any] = {"name": info.get("Description") if isinstance(info.get("Description"), str) and info.get("Description") else root.name}
    if variable_values:
        scenario["variables"] = variable_values
    scenario["targets"] = [{"name": t, "roles": roles[t]} for t in target_order]
    for spec in specs:
        del spec["_server"], spec["_proc_roles"]
    scenario["steps"] = specs

    outcome0 = NODE_OUTCOME.get(root.status, "succeeded")
    state = info.get("State")
    if outcome0 == "skipped":
        outcome0 = "succeeded"
    if isinstance(state, str) and state in ("Failed", "TimedOut"):
        outcome0 = "failed"
    elif isinstance(state, str) and state == "Canceled":
        outcome0 = "cancelled"
    record = Record(
        tool="octopus",
        id=f"octopus-{task_id or root.name}",
        start=min([start0] + [rec.start for rec in records if rec.start is not None]),
        end=end0,
        outcome=outcome0,
        steps=records,
        options={"imported_from": "octopus", "task": task_id, "files": [d[0] for d in (task, process, machines, variables) if d is not None]},
    )
    if steps_of is None:
        notes.append("no deployment process given: each step's role is named after the step; start triggers and conditions are inferred from the times")
    return finish(scenario, record, notes, file)


_ATTEMPT_OUTCOME = {status: o if o in ("succeeded", "failed", "cancelled") else "succeeded" for status, o in NODE_OUTCOME.items()}


def _attempt_outcome(status: str) -> str:
    return _ATTEMPT_OUTCOME.get(status, "succeeded")


def _infer_triggers(records: list[StepRecord], specs: list[dict], notes: list[str]) -> None:
    """Without the process: a step that started before every earlier step had ended ran
    with the previous one; a step that ran after a failure has condition 'always'."""
    ended = None
    failure_at = None
    for i, (rec, spec) in enumerate(zip(records, specs, strict=True)):
        if rec.outcome == "skipped":
            if "condition" not in spec:
                spec["condition"] = "success" if failure_at is not None and failure_at <= (rec.start or 0) else "failure"
            continue
        if i > 0 and ended is not None and rec.start is not None and rec.start < ended:
            spec["start"] = "with-previous"
            notes.append(f"step {rec.name!r} started before the steps before it had ended: with-previous (inferred)")
        if failure_at is not None and rec.start is not None and failure_at <= rec.start:
            spec["condition"] = "always"
            notes.append(f"step {rec.name!r} ran after a failure: condition 'always' (inferred)")
        ends = [a.end for e in rec.executions for a in e.attempts] + ([rec.end] if rec.end is not None else [])
        if ends:
            ended = max(ends) if ended is None else max(ended, max(ends))
        for e in rec.executions:
            for a in e.attempts:
                if a.outcome in ("failed", "timed_out") and (failure_at is None or a.end < failure_at):
                    failure_at = a.end


def _declaration_order(first_seen: list[str], per_step: list[list[str]], notes: list[str]) -> list[str]:
    """Without the machines reply: the targets in an order that keeps every step's own
    order of its target nodes (Octopus lists them in the order it deploys to them), ties
    the way they first appear."""
    import heapq

    rank = {t: i for i, t in enumerate(first_seen)}
    after: dict[str, set[str]] = {t: set() for t in first_seen}
    before_count = {t: 0 for t in first_seen}
    for names in per_step:
        for a, b in zip(names, names[1:]):
            if b not in after[a]:
                after[a].add(b)
                before_count[b] += 1
    heap = [(rank[t], t) for t in first_seen if before_count[t] == 0]
    heapq.heapify(heap)
    out: list[str] = []
    while heap:
        _, t = heapq.heappop(heap)
        out.append(t)
        for b in after[t]:
            before_count[b] -= 1
            if before_count[b] == 0:
                heapq.heappush(heap, (rank[b], b))
    if len(out) < len(first_seen):
        notes.append("the steps list their targets in orders that contradict each other: targets declared as they first appear")
        return first_seen
    return out


def _infer_windows(records: list[StepRecord], specs: list[dict], notes: list[str]) -> None:
    """Without the process: a step that never ran more than k of its targets at once
    (k < its targets) had a rolling window of k."""
    for rec, spec in zip(records, specs, strict=True):
        spans = sorted((a.start, a.end) for e in rec.executions for a in e.attempts)
        if len(spans) < 2:
            continue
        marks = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda m: (m[0], m[1]))
        running = widest = 0
        for _, change in marks:
            running += change
            widest = max(widest, running)
        if widest < len(spans):
            spec["window"] = widest
            notes.append(f"step {rec.name!r} never ran more than {widest} of its {len(spans)} targets at once: window {widest} (inferred)")


def _assign_roles(
    specs: list[dict], per_step: list[list[str]], targets: list[str], known: dict[str, list[str]] | None, notes: list[str]
) -> dict[str, list[str]]:
    """Each target's roles, and each step's `roles`, such that a step fans out to the
    targets it ran on wherever the inputs allow it."""
    roles: dict[str, list[str]] = {t: list(known[t]) if known is not None else [] for t in targets}
    for spec, ran in zip(specs, per_step, strict=True):
        if spec["_server"]:
            continue
        proc_roles = spec["_proc_roles"]
        if proc_roles:
            spec["roles"] = list(proc_roles)
            if known is None:
                for t in ran:
                    if not set(roles[t]) & set(proc_roles):
                        roles[t].append(proc_roles[0] if len(proc_roles) == 1 else _best_role(proc_roles, ran, roles))
            continue
        if proc_roles is None and not ran:
            continue
        # No process: a role per step, named after it (or a known role that fits exactly).
        fitting = None
        if known is not None and ran:
            common = set(known[ran[0]]).intersection(*(known[t] for t in ran))
            for role in sorted(common):
                if {t for t in targets if role in known[t]} == set(ran):
                    fitting = role
                    break
        role = fitting or spec["name"]
        spec["roles"] = [role]
        for t in ran:
            if role not in roles[t]:
                roles[t].append(role)
    # Say where the roles fan a step out to a target that did not run it.
    holders: dict[str, set[str]] = {}
    for t in targets:
        for role in roles[t]:
            holders.setdefault(role, set()).add(t)
    for spec, ran in zip(specs, per_step, strict=True):
        if spec["_server"] or "roles" not in spec:
            continue
        fanned: set[str] = set().union(*(holders.get(role, set()) for role in spec["roles"]))
        extra = sorted(fanned.difference(ran), key=targets.index) if len(fanned) > len(ran) else []
        if extra:
            notes.append(
                f"step {spec['name']!r}: {', '.join(extra[:5])}{' …' if len(extra) > 5 else ''} "
                f"{'has' if len(extra) == 1 else 'have'} its roles but did not run it in this record: replay estimates {'it' if len(extra) == 1 else 'them'}"
            )
    return roles


def _best_role(candidates: list[str], ran: list[str], roles: dict[str, list[str]]) -> str:
    for c in candidates:
        if any(c in roles[t] for t in ran):
            return c
    return candidates[0]


__all__ = ["convert", "RecordError", "read_machines", "read_process_json", "read_process_ocl", "read_variables", "step_name"]
