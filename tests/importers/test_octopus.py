"""Octopus Deploy: task details (+ process as JSON or OCL, machines, variables) in; a
scenario and the recorded log out, replaying to the recorded makespan."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from engine.scenario import resolve
from simulator.importers import octopus
from simulator.importers.record import RecordError, parse_json, parse_ocl, strip_comments
from simulator.replay import replay
from simulator.sim import simulate
from simulator.whatif import parse_axes
from tests.engine.test_properties import SETTINGS, scenarios
from tests.importers import render

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "histories" / "octopus"


def doc(name: str, text: str | None = None) -> tuple[str, object]:
    text = text if text is not None else (FIXTURES / name).read_text()
    return name, parse_json(text, name)


def imported(task: str = "task.json", process: str | None = "process.json", machines: bool = True, variables: bool = True):
    proc = None
    if process is not None:
        proc = (process, parse_ocl((FIXTURES / process).read_text(), process)) if process.endswith(".ocl") else doc(process)
    return octopus.convert(
        doc(task) if not isinstance(task, tuple) else task,
        proc,
        process_is_ocl=bool(process and process.endswith(".ocl")),
        machines=doc("machines.json") if machines else None,
        variables=doc("variables.json") if variables else None,
    )


def steps_of(scenario: dict) -> list[tuple]:
    return [(s["name"], s.get("start", "after-previous"), s.get("roles", []), s.get("window"), s.get("condition", "success")) for s in scenario["steps"]]


EXPECTED_STEPS = [
    ("Acquire packages", "after-previous", [], None, "success"),
    ("Migrate database", "after-previous", ["db"], None, "success"),
    ("Deploy web", "after-previous", ["web"], 2, "success"),
    ("Deploy API", "with-previous", ["api"], None, "success"),
    ("Warm caches", "with-previous", ["web"], None, "success"),
    ("Smoke test", "after-previous", [], None, "success"),
    ("Notify on failure", "after-previous", [], None, "failure"),
]


@pytest.mark.parametrize("process", ["process.json", "deployment_process.ocl"])
def test_a_deployment_imports_with_its_process_and_replays_to_the_millisecond(process):
    result = imported(process=process)
    scenario = result.scenario
    assert steps_of(scenario) == EXPECTED_STEPS
    assert scenario["variables"] == {"Octopus.Action.MaxParallelism": "5"}
    assert [(t["name"], t["roles"]) for t in scenario["targets"]] == [
        ("db-01", ["db"]), ("web-01", ["web"]), ("web-02", ["web"]), ("web-03", ["web"]), ("web-04", ["web"]), ("api-01", ["api"]), ("api-02", ["api"]),
    ]
    assert scenario["steps"][2]["duration"] == {"web-01": 8.1, "web-02": 7.942, "web-03": 9.417, "web-04": 8.6}
    assert scenario["steps"][0]["duration"] == 4.216
    r = replay(result.events)
    assert (r.recorded_makespan, r.recorded_outcome, r.outcome) == (39.609, "succeeded", "succeeded")
    assert abs(r.makespan - r.recorded_makespan) < 1e-9 and r.disagreements == [] and r.estimated == []
    assert result.events[0].deployment == "octopus-ServerTasks-4711"
    assert result.events[0].wall == "2026-03-14T09:26:53Z" and result.events[-1].wall == "2026-03-14T09:27:32.609Z"
    # The scenario simulates to the same timeline.
    assert simulate(resolve(strip_comments(scenario))).makespan == 39.609


def test_what_if_the_web_farm_rolled_four_at_a_time_with_the_mutex_bypassed():
    r = replay(imported().events, parse_axes(["target_isolation=exclusive,shared", "steps.Deploy web.window=2,4"]))
    assert [(row.settings["target_isolation"], row.settings["steps.Deploy web.window"], row.makespan) for row in r.rows] == [
        ("exclusive", 2, 39.609), ("exclusive", 4, 34.742), ("shared", 2, 39.609), ("shared", 4, 33.282),
    ]
    assert [row.savings_vs_recorded for row in r.rows] == [0.0, 4.867, 0.0, 6.327]


def test_a_failed_deployment_replays_its_failure():
    result = imported(task="task-failed.json")
    assert result.scenario["steps"][2]["fails"] == {"web-03": 1}
    r = replay(result.events)
    assert (r.recorded_makespan, r.recorded_outcome, r.makespan, r.outcome) == (35.282, "failed", 35.282, "failed")
    names = [s["name"] for s in result.scenario["steps"]]
    assert "Smoke test" in names and "Notify on failure" in names  # skipped and run: what the rules do on a failure


def test_a_record_that_breaks_the_rules_is_imported_and_replay_says_where():
    result = imported(task="task-overlap.json", process="deployment_process.ocl")
    r = replay(result.events)
    assert r.disagreements == ["at 17s: 'Warm caches' started on web-01 while 'Deploy web' held it (exclusive lock)"]
    assert abs(r.makespan - r.recorded_makespan) < 1e-9  # the warm-up was not on the critical path


def test_without_the_process_steps_roles_triggers_and_windows_come_from_the_log():
    result = imported(process=None, machines=False, variables=False)
    assert [(s["name"], s.get("start", "after-previous"), s.get("window")) for s in result.scenario["steps"]] == [
        ("Acquire packages", "after-previous", None), ("Migrate database", "after-previous", None), ("Deploy web", "after-previous", 2),
        ("Deploy API", "with-previous", None), ("Warm caches", "with-previous", 2), ("Smoke test", "after-previous", None),
        ("Notify on failure", "after-previous", None),
    ]
    assert result.scenario["steps"][2]["roles"] == ["Deploy web"]
    assert any("inferred" in n for n in result.notes)
    r = replay(result.events)
    assert abs(r.makespan - r.recorded_makespan) < 1e-9


def test_process_steps_the_log_does_not_have_are_left_out_with_a_note():
    process = json.loads((FIXTURES / "process.json").read_text())
    process["Steps"].insert(1, {"Name": "Backup database", "Properties": {"Octopus.Action.TargetRoles": "db"}, "Actions": [{"Properties": {}}]})
    result = octopus.convert(doc("task.json"), ("process.json", process), machines=doc("machines.json"))
    assert "Backup database" not in [s["name"] for s in result.scenario["steps"]]
    assert any("'Backup database' is not in this deployment's task log" in n for n in result.notes)


def edited(change) -> tuple[str, object]:  # noqa: ANN001
    task = json.loads((FIXTURES / "task.json").read_text())
    change(task)
    return "task.json", task


def bad(task=None, machines=None, process=None) -> str:  # noqa: ANN001
    with pytest.raises(RecordError) as e:
        octopus.convert(task or doc("task.json"), process or doc("process.json"), machines=machines or doc("machines.json"))
    return str(e.value)


def steps(task: dict) -> list:
    return task["ActivityLogs"][0]["Children"]


def test_a_time_that_is_no_time_names_its_json_path():
    def change(task):
        steps(task)[3]["Started"] = "half past nine"

    assert bad(edited(change)) == "task.json: $.ActivityLogs[0].Children[3].Started: expected an ISO-8601 time, got 'half past nine'"


def test_a_machine_the_machines_file_lacks_is_bad_input():
    machines = json.loads((FIXTURES / "machines.json").read_text())
    machines["Items"] = [m for m in machines["Items"] if m["Name"] != "web-03"]
    machines["TotalResults"] -= 1
    assert bad(machines=("machines.json", machines)) == "task.json: $.ActivityLogs[0].Children[2].Children[2].Name: machine 'web-03' is not in machines.json"


def test_a_machines_reply_missing_pages_says_which():
    machines = json.loads((FIXTURES / "machines.json").read_text())
    machines.update(TotalResults=9, ItemsPerPage=3, Links={"Page.Current": "/api/Spaces-1/machines?skip=3&take=3"})
    machines["Items"] = machines["Items"][3:6]
    message = bad(machines=("machines.json", machines))
    assert message.startswith("machines.json: $: a paged reply with 3 of 9 machines (TotalResults): pages 1 and 3 missing")


def test_a_step_node_that_matches_no_step_and_is_no_octopus_insertion_is_bad_input():
    def change(task):
        steps(task)[5]["Name"] = "Step 5: Smoke tests"

    assert bad(edited(change)).startswith(
        "task.json: $.ActivityLogs[0].Children[5].Name: step node 'Step 5: Smoke tests' matches no step of process.json and is not one Octopus inserts"
    )


def test_an_end_before_the_start_and_an_unfinished_task_are_bad_input():
    def backwards(task):
        steps(task)[1]["Children"][0]["Ended"] = "2026-03-14T19:26:50.000+10:00"

    assert bad(edited(backwards)) == (
        "task.json: $.ActivityLogs[0].Children[1].Children[0].Ended: ends before it started "
        "(2026-03-14T09:26:50Z < 2026-03-14T09:26:57.216Z)"
    )

    def running(task):
        steps(task)[6]["Status"] = "Running"

    assert "Status: Running: the deployment has not finished" in bad(edited(running))


def test_an_empty_run_is_bad_input():
    def empty(task):
        task["ActivityLogs"][0]["Children"] = []

    assert bad(edited(empty)) == "task.json: $.ActivityLogs[0].Children: no steps: an empty run (the deployment did nothing to import)"


# --- deployments no one has seen, rendered the way Octopus writes them ----------------------


@st.composite
def octopus_scenarios(draw) -> dict:
    """Random scenarios Octopus can express: no depends_on, resources, retries, timeouts
    or per-step isolation; failures without retries; maybe an `Acquire packages` first."""
    raw = draw(scenarios())
    for step in raw["steps"]:
        for field in ("depends_on", "uses", "retries", "retry_delay", "timeout", "isolation"):
            step.pop(field, None)
    raw["resources"] = {}
    raw["policy"]["fail_fast"] = False
    if draw(st.booleans()):
        raw["steps"].insert(0, {"name": "Acquire packages", "duration": draw(st.integers(0, 3))})
    if raw["steps"][0].get("start") == "with-previous":
        del raw["steps"][0]["start"]
    return raw


def import_rendered(files: dict[str, str], ocl: bool):
    process = ("deployment_process.ocl", parse_ocl(files["deployment_process.ocl"], "p.ocl")) if ocl else ("process.json", parse_json(files["process.json"], "p"))
    return octopus.convert(
        ("task.json", parse_json(files["task.json"], "task.json")),
        process,
        process_is_ocl=ocl,
        machines=("machines.json", parse_json(files["machines.json"], "m")),
        variables=("variables.json", parse_json(files["variables.json"], "v")),
    )


@SETTINGS
@given(octopus_scenarios(), st.booleans(), st.sampled_from([3, 7]), st.integers(-11, 12), st.sampled_from(["max_parallel_steps=1,2", "target_isolation=shared,exclusive"]))
def test_any_octopus_deployment_that_follows_the_rules_replays_to_the_millisecond(raw, ocl, digits, offset, grid):
    plan = resolve(copy.deepcopy(raw))
    events: list = []
    simulate(plan, sink=events.extend, sequential=False)
    files = render.octopus(plan, events, offset_hours=offset, digits=digits, ocl=ocl)
    result = import_rendered(files, ocl)
    r = replay(result.events, parse_axes([grid]))
    assert abs(r.recorded_makespan - events[-1].at) < 1e-9
    assert abs(r.makespan - r.recorded_makespan) < 1e-9, (r.makespan, r.recorded_makespan)
    assert r.disagreements == [] and r.outcome == r.recorded_outcome
    key, _, values = grid.partition("=")
    for row, value in zip(r.rows, values.split(","), strict=True):
        if row.estimated:
            continue
        expected = simulate(resolve(copy.deepcopy(raw) | {"policy": {**raw["policy"], key: yaml.safe_load(value)}}), sequential=False)
        assert abs(row.makespan - expected.makespan) < 1e-9, row.settings
        assert row.outcome == expected.report.outcome
