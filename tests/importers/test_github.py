"""GitHub Actions: the jobs of a run (+ the workflow) in; matrix instances as the targets
of one step, needs as depends_on, queue time inside each job's attempt."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from engine.scenario import resolve
from simulator.importers import github
from simulator.importers.record import RecordError, parse_json, parse_yaml
from simulator.replay import replay
from simulator.sim import simulate
from simulator.whatif import parse_axes
from tests.engine.test_properties import SETTINGS, scenarios
from tests.importers import render

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "histories" / "github"
OTEL = "otel-cicd-action_run_12456168064_jobs.json"
BIOME = "biomejs_biome_run_12541749172_jobs.json"
WORKFLOW = "otel-build.workflow.yml"


def doc(name: str) -> tuple[str, object]:
    return name, parse_json((FIXTURES / name).read_text(), name)


def workflow() -> tuple[str, object]:
    return WORKFLOW, parse_yaml((FIXTURES / WORKFLOW).read_text(), WORKFLOW)


def test_a_real_run_with_a_matrix_and_needs_replays_within_one_percent_of_its_span():
    result = github.convert([doc(OTEL)], workflow())
    steps = {s["name"]: s for s in result.scenario["steps"]}
    assert list(steps) == ["build", "tests", "otel-cicd"]
    assert steps["tests"]["roles"] == ["tests"]
    assert [t["name"] for t in result.scenario["targets"]] == ["tests (ubuntu-latest)", "tests (windows-latest)", "tests (macos-latest)"]
    assert steps["otel-cicd"]["depends_on"] == ["build", "tests"] and steps["otel-cicd"]["condition"] == "always"
    r = replay(result.events)
    # The span: the first job created 17:11:26, the last completed 17:12:37.
    assert r.recorded_makespan == 71.0
    assert r.fidelity is not None and r.fidelity <= 0.01
    assert abs(r.makespan - 71.0) < 1e-9


def test_without_the_workflow_needs_are_inferred_from_the_times_and_said_to_be():
    result = github.convert([doc(OTEL)])
    steps = {s["name"]: s for s in result.scenario["steps"]}
    assert steps["otel-cicd"]["depends_on"] == ["build", "tests"]
    assert "no workflow given: dependencies inferred from the times: otel-cicd <- build, tests" in result.notes
    assert result.events[0].options["inferred_dependencies"] == ["otel-cicd <- build, tests"]
    assert replay(result.events).fidelity == 0.0


def test_the_biome_run_queue_time_is_part_of_each_job():
    result = github.convert([doc(BIOME)])
    steps = {s["name"]: s for s in result.scenario["steps"]}
    assert set(steps) == {"Check Dependencies", "Lint Rust Files", "Test262 Coverage", "Test", "Format Rust Files"}
    assert steps["Test"]["duration"] == {"Test (windows-latest)": 847, "Test (ubuntu-latest)": 718, "Test (macos-latest)": 409}
    # Format Rust Files was created 04:07:47, picked up 04:12:18, done 04:14:17: 393 s from the run's start at 04:07:44.
    assert steps["Format Rust Files"]["duration"] == 393
    assert any("at most 271s (Format Rust Files)" in n for n in result.notes)
    r = replay(result.events, parse_axes(["max_parallel_steps=1,3"]))
    assert (r.recorded_makespan, r.makespan) == (847.0, 847.0)
    # One step at a time: 660 + 458 + 420 + 847 + 393. Three: Test waits for Test262 (420 s).
    assert [row.makespan for row in r.rows] == [2778.0, 420.0 + 847.0]


@pytest.mark.parametrize("shape", ["pages as files", "one file of pages", "documents one after another", "a list of jobs"])
def test_one_run_in_pages_in_any_shape_imports_the_same(shape, tmp_path):
    whole = json.loads((FIXTURES / OTEL).read_text())
    jobs = whole["jobs"]
    pages = [{"total_count": 5, "jobs": jobs[:2]}, {"total_count": 5, "jobs": jobs[2:4]}, {"total_count": 5, "jobs": jobs[4:]}]
    if shape == "pages as files":
        docs = [(f"p{i}.json", p) for i, p in enumerate(pages)]
    elif shape == "one file of pages":
        docs = [("pages.json", pages)]
    elif shape == "documents one after another":
        docs = [("paginate.json", parse_json("\n".join(json.dumps(p) for p in pages), "paginate.json"))]
    else:
        docs = [("list.json", jobs)]
    assert github.convert(docs).scenario == github.convert([doc(OTEL)]).scenario


def test_a_paged_reply_missing_pages_says_which():
    jobs = json.loads((FIXTURES / BIOME).read_text())["jobs"]
    with pytest.raises(RecordError) as e:
        github.convert([("page1.json", {"total_count": 8, "jobs": jobs[:3]})])
    assert str(e.value) == (
        "page1.json: $: 3 of 8 jobs (total_count): pages 2–3 of 3 missing (3 per page); "
        "fetch them (?per_page=3&page=N) and give every page (--jobs again)"
    )
    with pytest.raises(RecordError, match=r"page 2 of 3 missing"):
        github.convert([("p1.json", {"total_count": 8, "jobs": jobs[:3]}), ("p3.json", {"total_count": 8, "jobs": jobs[6:]})])
    with pytest.raises(RecordError, match=r"p2.json: \$.jobs\[0\].id: job \d+ is also at p1.json: \$.jobs\[0\] \(a page given twice\?\)"):
        github.convert([("p1.json", {"total_count": 8, "jobs": jobs[:3]}), ("p2.json", {"total_count": 8, "jobs": jobs[:3]})])


def test_bad_jobs_name_the_place():
    jobs = json.loads((FIXTURES / OTEL).read_text())
    backwards = copy.deepcopy(jobs)
    backwards["jobs"][2]["completed_at"] = "2024-12-22T17:11:30Z"
    with pytest.raises(RecordError) as e:
        github.convert([("jobs.json", backwards)])
    assert str(e.value) == "jobs.json: $.jobs[2].completed_at: before started_at (2024-12-22T17:11:30Z < 2024-12-22T17:11:35Z)"
    running = copy.deepcopy(jobs)
    running["jobs"][4]["status"] = "in_progress"
    with pytest.raises(RecordError, match=r"\$.jobs\[4\].status: 'in_progress': the run has not finished"):
        github.convert([("jobs.json", running)])
    with pytest.raises(RecordError, match=r"jobs.json: \$.jobs: no jobs: an empty run"):
        github.convert([("jobs.json", {"total_count": 0, "jobs": []})])
    odd = copy.deepcopy(jobs)
    odd["jobs"][0]["created_at"] = "yesterday"
    with pytest.raises(RecordError, match=r"jobs.json: \$.jobs\[0\].created_at: expected an ISO-8601 time, got 'yesterday'"):
        github.convert([("jobs.json", odd)])


def test_split_instance():
    assert github.split_instance("Test (ubuntu-latest, 20)") == ("Test", "ubuntu-latest, 20")
    assert github.split_instance("Build (a, (b))") == ("Build", "a, (b)")
    assert github.split_instance("Lint") == ("Lint", None)
    assert github.split_instance("odd )(") == ("odd )(", None)


# --- runs no one has seen, rendered the way GitHub writes them ------------------------------


@st.composite
def github_scenarios(draw) -> dict:
    """Random runs GitHub can express: every ready job runs at once on a runner of its
    own (shared targets, no resources, no retries or timeouts), each matrix has
    instances."""
    raw = draw(scenarios())
    raw["resources"] = {}
    raw["policy"] = {"max_parallel_steps": 10, "max_parallel_targets": 10, "target_isolation": "shared", "fail_fast": False}
    held = sorted({r for t in raw["targets"] for r in t["roles"]})
    for step in raw["steps"]:
        for field in ("uses", "retries", "retry_delay", "timeout", "isolation"):
            step.pop(field, None)
        if "roles" in step:
            step["roles"] = [r for r in step["roles"] if r in held] or held[:1]
    raw["steps"][0]["condition"] = "success"  # a run where nothing ran is no run
    return raw


@SETTINGS
@given(github_scenarios(), st.booleans(), st.sampled_from([0, 1, 2]), st.sampled_from([0, 3]))
def test_any_run_rendered_as_github_jobs_replays_to_its_span(raw, with_workflow, dispatch, queue):
    plan = resolve(copy.deepcopy(raw))
    events: list = []
    simulate(plan, sink=events.extend, sequential=False)
    files = render.github(plan, events, dispatch=dispatch, queue=queue)
    flow = ("workflow.yml", parse_yaml(files["workflow.yml"], "workflow.yml")) if with_workflow else None
    result = github.convert([("jobs.json", parse_json(files["jobs.json"], "jobs.json"))], flow)
    r = replay(result.events)
    assert abs(r.makespan - r.recorded_makespan) < 1e-9, (r.makespan, r.recorded_makespan)
    assert r.disagreements == []
    if with_workflow and dispatch == 0:
        assert abs(r.recorded_makespan - events[-1].at) < 1e-9
        # Under another setting, the same run equals the simulation of the scenario under it.
        (row,) = replay(result.events, parse_axes(["max_parallel_steps=1"])).rows
        if not row.estimated:
            expected = simulate(resolve(copy.deepcopy(raw) | {"policy": {**raw["policy"], "max_parallel_steps": 1}}), sequential=False)
            assert abs(row.makespan - expected.makespan) < 1e-9


def test_several_pages_rendered_as_files_import_like_one(tmp_path):
    plan = resolve(yaml.safe_load("""
        targets: [{name: a, roles: [x]}, {name: b, roles: [x]}, {name: c, roles: [x]}]
        steps:
          - {name: build, duration: 30}
          - {name: test, roles: [x], window: 2, duration: {a: 20, b: 25, c: 10}}
          - {name: ship, duration: 5}
    """))
    events: list = []
    simulate(plan, sink=events.extend, sequential=False)
    files = render.github(plan, events, per_page=2, queue=2)
    pages = [(n, parse_json(t, n)) for n, t in sorted(files.items()) if n.startswith("jobs-")]
    flow = ("workflow.yml", parse_yaml(files["workflow.yml"], "workflow.yml"))
    result = github.convert(pages, flow)
    assert result.scenario["steps"][1]["window"] == 2
    r = replay(result.events, parse_axes(["steps.test.window=1,3"]))
    assert (r.recorded_makespan, r.makespan) == (65.0, 65.0)
    assert [row.makespan for row in r.rows] == [90.0, 60.0]
