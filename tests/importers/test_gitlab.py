"""GitLab CI: a pipeline's jobs (+ .gitlab-ci.yml) in; stages, needs, parallel instances
as targets, resource groups as resources of capacity 1."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.scenario import resolve
from simulator.importers import gitlab
from simulator.importers.record import RecordError, parse_json, parse_yaml
from simulator.replay import replay
from simulator.sim import simulate
from simulator.whatif import parse_axes
from tests.engine.test_properties import SETTINGS, scenarios
from tests.importers import render

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "histories" / "gitlab"


def jobs() -> tuple[str, object]:
    return "jobs.json", parse_json((FIXTURES / "jobs.json").read_text(), "jobs.json")


def ci() -> tuple[str, object]:
    return ".gitlab-ci.yml", parse_yaml((FIXTURES / ".gitlab-ci.yml").read_text(), ".gitlab-ci.yml")


def test_a_pipeline_imports_with_its_stages_needs_instances_and_resource_group():
    result = gitlab.convert([jobs()], ci())
    steps = {s["name"]: s for s in result.scenario["steps"]}
    assert list(steps) == ["compile", "rspec", "test", "audit", "lint", "deploy-staging", "deploy-review", "notify-failure"]
    assert steps["rspec"]["roles"] == ["rspec"] and steps["rspec"]["retries"] == 1 and steps["rspec"]["fails"] == {"rspec 2/3": 1}
    assert [t["name"] for t in result.scenario["targets"]] == ["rspec 1/3", "rspec 2/3", "rspec 3/3", "test: [postgres-14]", "test: [postgres-16]"]
    assert steps["test"]["start"] == "with-previous" and steps["lint"]["depends_on"] == []
    assert steps["deploy-review"] == {"name": "deploy-review", "depends_on": ["compile"], "uses": {"staging": 1}, "duration": 301.904}
    assert result.scenario["resources"] == {"staging": 1}
    assert steps["notify-failure"]["condition"] == "failure"
    assert any("'audit' failed but was allowed to fail" in n for n in result.notes)
    r = replay(result.events)
    assert (r.recorded_makespan, r.makespan, r.recorded_outcome, r.disagreements) == (463.556, 463.556, "succeeded", [])


def test_what_if_the_review_deploy_had_its_own_environment():
    # Without the shared resource group deploy-staging starts as soon as the tests are done.
    events = gitlab.convert([jobs()], ci()).events
    r = replay(events, parse_axes(["steps.deploy-staging.uses={}", "steps.rspec.retries=0,1"]))
    assert [(row.settings["steps.rspec.retries"], row.makespan, row.outcome) for row in r.rows] == [
        (0, 399.356, "failed"),  # rspec 2/3 fails for good at 237.323; deploy-review still runs to its end
        (1, 441.394, "succeeded"),  # deploy-staging 377.194-441.394 beside deploy-review, not after it
    ]


def test_without_the_ci_file_stages_come_from_the_job_ids_and_needs_from_the_times():
    result = gitlab.convert([jobs()])
    steps = {s["name"]: s for s in result.scenario["steps"]}
    assert steps["lint"]["depends_on"] == [] and steps["deploy-review"]["depends_on"] == ["compile", "lint"]
    assert "notify-failure" not in steps
    assert replay(result.events).fidelity == 0.0
    assert result.events[0].options["inferred_dependencies"] == ["lint <- ", "deploy-review <- compile, lint"]


def test_bad_jobs_name_the_place():
    data = json.loads((FIXTURES / "jobs.json").read_text())
    backwards = copy.deepcopy(data)
    backwards[3]["finished_at"] = "2026-02-03T14:05:12.000Z"
    with pytest.raises(RecordError, match=r"jobs.json: \$\[3\].finished_at: before started_at"):
        gitlab.convert([("jobs.json", backwards)])
    running = copy.deepcopy(data)
    running[0]["status"] = "running"
    with pytest.raises(RecordError, match=r"\$\[0\].status: 'running': the pipeline has not finished"):
        gitlab.convert([("jobs.json", running)])
    with pytest.raises(RecordError, match=r"jobs.json: \$: no jobs: an empty pipeline"):
        gitlab.convert([("jobs.json", [])])
    with pytest.raises(RecordError, match=r"p2.json: \$\[0\].id: job 8812100 is also at p1.json: \$\[0\]"):
        gitlab.convert([("p1.json", data[:3]), ("p2.json", data[:3])])


def test_split_instance():
    assert gitlab.split_instance("deploy: [aws, eu-west-1]") == ("deploy", "aws, eu-west-1")
    assert gitlab.split_instance("rspec 2/4") == ("rspec", "2/4")
    assert gitlab.split_instance("build 2024") == ("build 2024", None)


@st.composite
def gitlab_scenarios(draw) -> dict:
    """Random pipelines GitLab can express: every job on a runner of its own, instances
    all at once, resource groups of one unit."""
    raw = draw(scenarios())
    raw["policy"] = {"max_parallel_steps": 10, "max_parallel_targets": 10, "target_isolation": "shared", "fail_fast": False}
    raw["resources"] = {name: 1 for name in raw["resources"]}
    held = sorted({r for t in raw["targets"] for r in t["roles"]})
    for step in raw["steps"]:
        for field in ("timeout", "isolation", "window", "retry_delay"):
            step.pop(field, None)
        if "uses" in step:
            step["uses"] = {next(iter(step["uses"])): 1}
        if "roles" in step:
            step["roles"] = [r for r in step["roles"] if r in held] or held[:1]
    raw["steps"][0]["condition"] = "success"
    return raw


@SETTINGS
@given(gitlab_scenarios(), st.sampled_from([0, 2]))
def test_any_pipeline_rendered_as_gitlab_jobs_replays_to_its_span_and_like_simulate(raw, queue):
    plan = resolve(copy.deepcopy(raw))
    events: list = []
    simulate(plan, sink=events.extend, sequential=False)
    files = render.gitlab(plan, events, queue=queue)
    result = gitlab.convert([("jobs.json", parse_json(files["jobs.json"], "jobs.json"))], (".gitlab-ci.yml", parse_yaml(files[".gitlab-ci.yml"], "ci")))
    r = replay(result.events, parse_axes(["target_isolation=exclusive"]))
    assert abs(r.recorded_makespan - events[-1].at) < 1e-6
    assert abs(r.makespan - r.recorded_makespan) < 1e-6, (r.makespan, r.recorded_makespan)
    assert r.disagreements == []
