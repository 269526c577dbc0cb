"""Render a simulated deployment into what another tool would have recorded: Octopus
task details (+ process JSON or OCL, machines, variables), GitHub Actions jobs (+ a
workflow), GitLab pipeline jobs (+ .gitlab-ci.yml).

The tests import these renderings and check that what comes back replays to the
simulated timeline: the importers then see a record they have never seen, written the
way the tool writes it (the field lists of SPEC §5 and the tools' public API models).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from engine.events import DeploymentFinished, ExecutionFinished, ExecutionStarted, StepFinished, StepSkipped, StepStarted
from engine.plan import Plan, fan_out
from simulator.importers.octopus import INSERTED

BASE = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)


def when(at: float, offset_hours: int = 0, digits: int = 3) -> str:
    """A time `at` seconds after BASE, as .NET writes a DateTimeOffset."""
    t = BASE + timedelta(seconds=round(at, 6)) + timedelta(hours=offset_hours)
    zone = f"{'+' if offset_hours >= 0 else '-'}{abs(offset_hours):02d}:00"
    frac = f"{t.microsecond:06d}"[:digits] if digits <= 6 else f"{t.microsecond:06d}" + "0" * (digits - 6)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if digits else "") + zone


def _timeline(events: list) -> tuple[dict, dict, dict, float, str]:
    steps: dict[str, dict] = {}
    attempts: dict[tuple[str, str | None], list[list]] = {}
    open_: dict[tuple[str, str | None], list] = {}
    end, outcome = 0.0, "succeeded"
    for ev in events:
        if isinstance(ev, StepStarted):
            steps[ev.step] = {"start": ev.at, "end": None, "outcome": None}
        elif isinstance(ev, StepSkipped):
            steps[ev.step] = {"start": ev.at, "end": ev.at, "outcome": "skipped"}
        elif isinstance(ev, StepFinished):
            steps.setdefault(ev.step, {"start": ev.at})
            steps[ev.step].update(end=ev.at, outcome=ev.outcome)
        elif isinstance(ev, ExecutionStarted):
            a = [ev.at, None, None]
            open_[(ev.step, ev.target)] = a
            attempts.setdefault((ev.step, ev.target), []).append(a)
        elif isinstance(ev, ExecutionFinished):
            a = open_.pop((ev.step, ev.target))
            a[1], a[2] = ev.at, ev.outcome
        elif isinstance(ev, DeploymentFinished):
            end, outcome = ev.at, ev.outcome
    return steps, attempts, open_, end, outcome


OCTOPUS_STATUS = {"succeeded": "Success", "failed": "Failed", "cancelled": "Canceled", "skipped": "Skipped", "timed_out": "Failed"}


def octopus(plan: Plan, events: list, offset_hours: int = 10, digits: int = 3, ocl: bool = False, task_id: str = "ServerTasks-4711") -> dict[str, str]:
    """task.json, process.json (or deployment_process.ocl), machines.json, variables.json."""
    assert not plan.policy.fail_fast, "Octopus has no fail_fast"
    for step in plan.steps:
        assert step.depends_on is None and not step.uses and not step.retries and step.timeout is None and step.isolation is None, (
            f"step {step.name!r} uses what Octopus cannot express"
        )
    steps, attempts, _, end, outcome = _timeline(events)
    fanned = fan_out(plan)
    children = []
    number = 0
    for step, targets in zip(plan.steps, fanned, strict=True):
        info = steps[step.name]
        inserted = step.name in INSERTED
        if not inserted:
            number += 1
        node_name = step.name if inserted else f"Step {number}: {step.name}"
        kids = []
        if step.roles:
            for t in targets:
                name = plan.targets[t].name
                tries = attempts.get((step.name, name))
                if not tries:
                    kids.append({"Id": f"{task_id}_{number}_{name}", "Name": name, "Started": None, "Ended": None, "Status": "Skipped", "Children": [], "LogElements": []})
                    continue
                (start, stop, result) = tries[0]
                kids.append(
                    {"Id": f"{task_id}_{number}_{name}", "Name": name, "Started": when(start, offset_hours, digits), "Ended": when(stop, offset_hours, digits),
                     "Status": OCTOPUS_STATUS[result], "ShowAtSummaryLevel": False, "ProgressPercentage": 100, "Children": [], "LogElements": [
                         {"Category": "Info", "MessageText": f"Executing {step.name} on {name}", "OccurredAt": when(start, offset_hours, digits)}]}
                )
        elif (step.name, None) in attempts and not inserted:
            start, stop, result = attempts[(step.name, None)][0]
            kids.append({"Id": f"{task_id}_{number}_server", "Name": "Octopus Server", "Started": when(start, offset_hours, digits), "Ended": when(stop, offset_hours, digits), "Status": OCTOPUS_STATUS[result], "Children": [], "LogElements": []})
        status = OCTOPUS_STATUS[info["outcome"]]
        skipped = info["outcome"] == "skipped"
        children.append(
            {"Id": f"{task_id}_step{number}", "Name": node_name, "Started": None if skipped else when(info["start"], offset_hours, digits),
             "Ended": None if skipped else when(info["end"], offset_hours, digits), "Status": status, "ShowAtSummaryLevel": True,
             "ProgressPercentage": 100, "ProgressMessage": None, "Children": kids, "LogElements": []}
        )
    task = {
        "Id": task_id,
        "Task": {
            "Id": task_id, "Name": "Deploy", "Description": f"Deploy {plan.name or 'web'} release 1.4.2 to Production", "State": "Success" if outcome == "succeeded" else "Failed",
            "QueueTime": when(-1.5, offset_hours, digits), "StartTime": when(0, offset_hours, digits), "CompletedTime": when(end, offset_hours, digits),
            "IsCompleted": True, "FinishedSuccessfully": outcome == "succeeded", "HasWarningsOrErrors": outcome != "succeeded",
            "Arguments": {"DeploymentId": "Deployments-2024"}, "Duration": f"{end:g} seconds", "ErrorMessage": "" if outcome == "succeeded" else "The deployment failed",
        },
        "ActivityLogs": [
            {"Id": task_id, "Name": f"Deploy {plan.name or 'web'} release 1.4.2 to Production", "Started": when(0, offset_hours, digits), "Ended": when(end, offset_hours, digits),
             "Status": "Success" if outcome == "succeeded" else "Failed", "ShowAtSummaryLevel": True, "ProgressPercentage": 100, "Children": children, "LogElements": []}
        ],
        "PhysicalLogSize": 48213,
        "Progress": {"ProgressPercentage": 100, "EstimatedTimeRemaining": "0s"},
        "Links": {"Self": f"/api/Spaces-1/tasks/{task_id}/details"},
    }
    process_steps = [s for s in plan.steps if s.name not in INSERTED]
    files = {"task.json": json.dumps(task, indent=2)}
    if ocl:
        files["deployment_process.ocl"] = _ocl(plan, process_steps)
    else:
        files["process.json"] = json.dumps(
            {"Id": "deploymentprocess-Projects-42", "ProjectId": "Projects-42", "Version": 7, "Steps": [_process_step(plan, s, i) for i, s in enumerate(process_steps)], "LastSnapshotId": None},
            indent=2,
        )
    files["machines.json"] = json.dumps(
        {"ItemType": "DeploymentTarget", "TotalResults": len(plan.targets), "ItemsPerPage": max(30, len(plan.targets)), "NumberOfPages": 1, "LastPageNumber": 0,
         "Items": [{"Id": f"Machines-{i + 1}", "Name": t.name, "Roles": list(t.roles), "EnvironmentIds": ["Environments-1"], "IsDisabled": False, "HealthStatus": "Healthy"} for i, t in enumerate(plan.targets)]},
        indent=2,
    )
    variables = []
    if plan.policy.max_parallel_steps != 10:
        variables.append({"Id": "v1", "Name": "Octopus.Action.MaxParallelism", "Value": str(plan.policy.max_parallel_steps), "Scope": {}, "IsSensitive": False, "Type": "String"})
    if plan.policy.target_isolation == "shared":
        variables.append({"Id": "v2", "Name": "OctopusBypassDeploymentMutex", "Value": "True", "Scope": {}, "IsSensitive": False, "Type": "String"})
    variables.append({"Id": "v3", "Name": "ConnectionString", "Value": "Server=db-01", "Scope": {"Environment": ["Environments-1"]}, "IsSensitive": False, "Type": "String"})
    files["variables.json"] = json.dumps({"Id": "variableset-Projects-42", "OwnerId": "Projects-42", "Version": 3, "Variables": variables}, indent=2)
    return files


def _window(plan: Plan, step) -> int | None:  # noqa: ANN001
    """A step's rolling window as Octopus would hold it: its own, else the policy's when
    MaxParallelism (one number for steps and targets) cannot say it."""
    if step.window is not None:
        return step.window
    if plan.policy.max_parallel_targets != plan.policy.max_parallel_steps and step.roles:
        return plan.policy.max_parallel_targets
    return None


def _process_step(plan: Plan, step, i: int) -> dict:  # noqa: ANN001
    props = {}
    if step.roles:
        props["Octopus.Action.TargetRoles"] = ",".join(step.roles)
    if _window(plan, step) is not None:
        props["Octopus.Action.MaxParallelism"] = str(_window(plan, step))
    return {
        "Id": f"step-{i}", "Name": step.name, "PackageRequirement": "LetOctopusDecide", "Properties": props,
        "Condition": step.condition.capitalize(), "StartTrigger": "StartWithPrevious" if step.start == "with-previous" else "StartAfterPrevious",
        "Actions": [{"Id": f"action-{i}", "Name": step.name, "ActionType": "Octopus.Script", "IsDisabled": False, "Environments": [], "Channels": [],
                     "Properties": {"Octopus.Action.RunOnServer": "false" if step.roles else "true", "Octopus.Action.Script.ScriptBody": step.run or "echo deploy", "Octopus.Action.Script.Syntax": "Bash"}}],
    }


def _ocl(plan: Plan, steps: list) -> str:
    out = []
    for step in steps:
        slug = step.name.lower().replace(" ", "-")
        lines = [f'step "{slug}" {{', f'    name = {json.dumps(step.name)}']
        if step.condition != "success":
            lines.append(f'    condition = "{step.condition.capitalize()}"')
        if step.start == "with-previous":
            lines.append('    start_trigger = "StartWithPrevious"')
        props = []
        if step.roles:
            props.append(f'        Octopus.Action.TargetRoles = {json.dumps(",".join(step.roles))}')
        if _window(plan, step) is not None:
            props.append(f'        Octopus.Action.MaxParallelism = "{_window(plan, step)}"')
        if props:
            lines += ["", "    properties = {", *props, "    }"]
        lines += [
            "",
            f'    action "{slug}" {{',
            '        action_type = "Octopus.Script"',
            "        properties = {",
            f'            Octopus.Action.RunOnServer = "{"false" if step.roles else "true"}"',
            "            Octopus.Action.Script.ScriptBody = <<-EOT",
            f"                {step.run or 'echo deploy'}",
            "            EOT",
            '            Octopus.Action.Script.ScriptSource = "Inline"',
            '            Octopus.Action.Script.Syntax = "Bash"',
            "        }",
            '        worker_pool_variable = ""',
            "    }",
            "}",
        ]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


GITHUB_CONCLUSION = {"succeeded": "success", "failed": "failure", "timed_out": "timed_out", "cancelled": "cancelled"}


def github(plan: Plan, events: list, run_id: int = 987654321, dispatch: float = 0.0, queue: float = 0.0, per_page: int | None = None) -> dict[str, str]:
    """jobs.json (or jobs-1.json, jobs-2.json … with per_page) and workflow.yml: each step
    a job, each target of a step a matrix instance `STEP (TARGET)`. `dispatch` seconds
    pass between a job becoming ready and its creation, `queue` more before a runner
    picks it up; the rendered job completes at the simulated end."""
    steps, attempts, _, end, outcome = _timeline(events)
    fanned = fan_out(plan)
    jobs = []
    job_id = 30000000000
    for step, targets in zip(plan.steps, fanned, strict=True):
        info = steps[step.name]
        names = [(plan.targets[t].name, f"{step.name} ({plan.targets[t].name})") for t in targets] if step.roles else [(None, step.name)]
        for target, name in names:
            tries = attempts.get((step.name, target))
            job_id += 1
            if info["outcome"] == "skipped" or not tries:
                t = info["start"]
                jobs.append(_gh_job(job_id, run_id, name, "skipped", t, t, t))
                continue
            start, stop, result = tries[-1]
            created = min(start + dispatch, stop) if start > 0 else 0.0
            jobs.append(_gh_job(job_id, run_id, name, GITHUB_CONCLUSION[result], created, min(created + queue, stop), stop))
    files = {}
    if per_page:
        pages = [jobs[i : i + per_page] for i in range(0, len(jobs), per_page)]
        for n, page in enumerate(pages, 1):
            files[f"jobs-{n}.json"] = json.dumps({"total_count": len(jobs), "jobs": page}, indent=2)
    else:
        files["jobs.json"] = json.dumps({"total_count": len(jobs), "jobs": jobs}, indent=2)
    wf = {"name": plan.name or "CI", "on": {"push": {"branches": ["main"]}}, "jobs": {}}
    for i, step in enumerate(plan.steps):
        spec: dict = {"runs-on": "ubuntu-latest", "steps": [{"run": step.run or "make"}]}
        job_key = f"job{i}"
        if step.name != job_key:
            spec["name"] = step.name
        prereq = _prerequisites(plan, i)
        if prereq:
            spec["needs"] = [f"job{k}" for k in prereq]
        if step.roles:
            spec["strategy"] = {"matrix": {"target": [plan.targets[t].name for t in fanned[i]]}}
            if step.window is not None:
                spec["strategy"]["max-parallel"] = step.window
        if step.condition == "always":
            spec["if"] = "${{ always() }}"
        elif step.condition == "failure":
            spec["if"] = "${{ failure() }}"
        wf["jobs"][job_key] = spec
    import yaml

    files["workflow.yml"] = yaml.safe_dump(wf, sort_keys=False)
    return files


def _gh_job(job_id: int, run_id: int, name: str, conclusion: str, created: float, started: float, completed: float) -> dict:
    def z(t: float) -> str:
        return (BASE + timedelta(seconds=round(t, 6))).strftime("%Y-%m-%dT%H:%M:%SZ")

    return {
        "id": job_id, "run_id": run_id, "workflow_name": "Deploy", "head_branch": "main", "run_attempt": 1, "status": "completed",
        "conclusion": conclusion, "created_at": z(created), "started_at": z(started), "completed_at": z(completed), "name": name,
        "steps": [], "labels": ["ubuntu-latest"], "runner_id": 7, "runner_name": "GitHub Actions 7", "runner_group_id": 2, "runner_group_name": "GitHub Actions",
    }


def _prerequisites(plan: Plan, i: int) -> list[int]:
    from engine.core import Core

    core = Core(plan, "x")
    if core.prereq_explicit[i] is not None:
        return list(core.prereq_explicit[i])
    return list(range(core.prereq_prefix[i] or 0))


GITLAB_STATUS = {"succeeded": "success", "failed": "failed", "cancelled": "canceled", "timed_out": "failed"}


def gitlab(plan: Plan, events: list, pipeline: int = 4242, queue: float = 0.0) -> dict[str, str]:
    """jobs.json and .gitlab-ci.yml: each step a job in a stage of its own (so stage
    order is declaration order) whose `needs` are its prerequisites, targets as
    `parallel: matrix` instances `STEP: [TARGET]`, resources as resource groups."""
    steps, attempts, _, end, outcome = _timeline(events)
    fanned = fan_out(plan)
    jobs = []
    job_id = 700000
    ci: dict = {"stages": [f"s{i}" for i in range(len(plan.steps))]}

    def z(t: float) -> str:
        return (BASE + timedelta(seconds=round(t, 6))).strftime("%Y-%m-%dT%H:%M:%S.") + f"{(BASE + timedelta(seconds=round(t, 6))).microsecond // 1000:03d}Z"

    for i, (step, targets) in enumerate(zip(plan.steps, fanned, strict=True)):
        info = steps[step.name]
        names = [(plan.targets[t].name, f"{step.name}: [{plan.targets[t].name}]") for t in targets] if step.roles else [(None, step.name)]
        for target, name in names:
            tries = attempts.get((step.name, target)) or []
            if info["outcome"] == "skipped" or not tries:
                job_id += 1
                jobs.append({"id": job_id, "name": name, "stage": f"s{i}", "status": "skipped", "created_at": z(0), "started_at": None, "finished_at": None,
                             "duration": None, "queued_duration": None, "allow_failure": False, "pipeline": {"id": pipeline, "ref": "main", "status": outcome}, "ref": "main"})
                continue
            for start, stop, result in tries:
                job_id += 1
                jobs.append({"id": job_id, "name": name, "stage": f"s{i}", "status": GITLAB_STATUS[result], "created_at": z(0), "started_at": z(start + queue if stop - start >= queue else start),
                             "finished_at": z(stop), "duration": stop - start, "queued_duration": queue, "allow_failure": False,
                             "pipeline": {"id": pipeline, "ref": "main", "status": "success" if outcome == "succeeded" else "failed"}, "ref": "main"})
        spec: dict = {"stage": f"s{i}", "script": [step.run or "make"], "needs": [plan.steps[k].name for k in _prerequisites(plan, i)]}
        if step.roles:
            spec["parallel"] = {"matrix": [{"TARGET": [plan.targets[t].name for t in targets]}]}
        if step.uses:
            (group,) = step.uses
            spec["resource_group"] = group
        if step.retries:
            spec["retry"] = step.retries
        if step.condition == "always":
            spec["when"] = "always"
        elif step.condition == "failure":
            spec["when"] = "on_failure"
        ci[step.name] = spec
    import yaml

    jobs.reverse()  # GitLab lists the newest job first
    return {"jobs.json": json.dumps(jobs, indent=2), ".gitlab-ci.yml": yaml.safe_dump(ci, sort_keys=False)}
