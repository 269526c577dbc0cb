"""Jenkins: Stage View runs and Blue Ocean nodes in; stages in order, parallel branches
side by side, queue and input pauses inside the stage they precede."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from simulator.importers import jenkins
from simulator.importers.merge import merge
from simulator.importers.record import RecordError, parse_json
from simulator.replay import replay
from simulator.whatif import parse_axes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "histories"


def doc(path: str) -> tuple[str, object]:
    return Path(path).name, parse_json((FIXTURES / path).read_text(), Path(path).name)


def test_the_latest_run_of_a_runs_reply_with_queue_time_and_an_approval_pause():
    (result,) = jenkins.convert(doc("jenkins_wfapi/06_rest_api_runs.json"))
    assert result.record.id == "jenkins-WFX-7"
    assert [(s["name"], s["duration"]) for s in result.scenario["steps"]] == [("Dev", 7.516), ("QA", 16.358), ("Staging", 19.876), ("Production", 0.064)]
    assert "the run waited 7.498s in the queue for an executor: kept in the time of its first stage" in result.notes
    assert "stage 'Staging' paused 19.763s for input: kept in its time" in result.notes
    r = replay(result.events)
    assert (r.recorded_makespan, r.makespan, r.fidelity) == (43.814, 43.814, 0.0)


def test_a_failed_run_and_a_restart_from_a_later_stage():
    (failed,) = jenkins.convert(doc("jenkins_wfapi/04_rest_api_runs_failed.json"))
    assert [s["name"] for s in failed.scenario["steps"]] == ["Dev", "QA", "Staging"]
    r = replay(failed.events)
    assert (r.recorded_outcome, r.outcome, r.makespan) == ("failed", "failed", 39.528)
    (restart,) = jenkins.convert(doc("jenkins_wfapi/03_rest_api_runs_checkpoint_rerun.json"))
    assert [s["name"] for s in restart.scenario["steps"]] == ["Production"]
    assert "stage 'Dev' was not executed (a restart from a later stage, or a false `when`): left out" in restart.notes


def test_every_run_of_a_reply_folds_into_empirical_durations():
    runs = jenkins.convert(doc("jenkins_wfapi/06_rest_api_runs.json"), every_run=True)
    assert [r.record.id for r in runs] == ["jenkins-WFX-7", "jenkins-WFX-6", "jenkins-WFX-5", "jenkins-WFX-4"]
    scenario, notes = merge(runs)
    durations = {s["name"]: s["duration"] for s in scenario["steps"]}
    # Production, from the end of the stage before it (or the run's start) to its end, in each run.
    assert durations["Production"] == {"dist": "empirical", "samples": [0.04, 0.064, 1.422, 2.402]}
    assert durations["Staging"] == {"dist": "empirical", "samples": [19.876, 380.013]}
    assert durations["Dev"] == {"dist": "empirical", "samples": [7.516, 14.627]}


def test_blue_ocean_nodes_give_stages_and_parallel_branches():
    (result,) = jenkins.convert(doc("jenkins_blueocean/pipeline-nodes-example.json"))
    assert [(s["name"], s.get("start", "after-previous")) for s in result.scenario["steps"]] == [
        ("Build", "after-previous"), ("Test / Firefox", "after-previous"), ("Test / Chrome", "with-previous"), ("Deploy", "after-previous"),
    ]
    assert "'Deploy': the reply gives no duration for it: taken as 0 s" in result.notes
    r = replay(result.events, parse_axes(["steps.Test / Chrome.start=after-previous"]))
    assert (r.recorded_makespan, r.makespan) == (1.303, 1.303)
    assert [row.makespan for row in r.rows] == [1.912]


def test_blue_ocean_with_types_and_durations():
    nodes = [
        {"id": "6", "displayName": "Build", "type": "STAGE", "startTime": "2026-01-05T10:00:00.000+0000", "durationInMillis": 30000, "result": "SUCCESS", "state": "FINISHED", "edges": [{"id": "11", "type": "STAGE"}]},
        {"id": "11", "displayName": "Tests", "type": "STAGE", "startTime": "2026-01-05T10:00:30.000+0000", "durationInMillis": 45000, "result": "SUCCESS", "state": "FINISHED", "edges": [{"id": "14", "type": "PARALLEL"}, {"id": "15", "type": "PARALLEL"}]},
        {"id": "14", "displayName": "unit", "type": "PARALLEL", "firstParent": "11", "startTime": "2026-01-05T10:00:30.100+0000", "durationInMillis": 20000, "result": "SUCCESS", "state": "FINISHED", "edges": [{"id": "30", "type": "STAGE"}]},
        {"id": "15", "displayName": "integration", "type": "PARALLEL", "firstParent": "11", "startTime": "2026-01-05T10:00:30.200+0000", "durationInMillis": 44800, "result": "SUCCESS", "state": "FINISHED", "edges": [{"id": "30", "type": "STAGE"}]},
        {"id": "30", "displayName": "Ship", "type": "STAGE", "startTime": "2026-01-05T10:01:15.500+0000", "durationInMillis": 5000, "result": "SUCCESS", "state": "FINISHED", "edges": []},
    ]
    (result,) = jenkins.convert(("nodes.json", nodes))
    assert [s["name"] for s in result.scenario["steps"]] == ["Build", "Tests / unit", "Tests / integration", "Ship"]
    assert [s["duration"] for s in result.scenario["steps"]] == [30, 20.1, 45, 5.5]
    r = replay(result.events, parse_axes(["steps.Tests / integration.start=after-previous"]))
    assert (r.recorded_makespan, r.makespan) == (80.5, 80.5)
    assert [row.makespan for row in r.rows] == [100.6]


def test_bad_runs_name_the_place():
    runs = json.loads((FIXTURES / "jenkins_wfapi/06_rest_api_runs.json").read_text())
    running = copy.deepcopy(runs[0])
    running["stages"][3]["status"] = "IN_PROGRESS"
    with pytest.raises(RecordError, match=r"r.json: \$.stages\[3\].status: IN_PROGRESS: the run has not finished"):
        jenkins.convert(("r.json", running))
    empty = copy.deepcopy(runs[0])
    empty["stages"] = []
    with pytest.raises(RecordError, match=r"r.json: \$.stages: no stages: an empty run"):
        jenkins.convert(("r.json", empty))
    odd = copy.deepcopy(runs[0])
    odd["stages"][1]["durationMillis"] = -3
    with pytest.raises(RecordError, match=r"r.json: \$.stages\[1\].durationMillis: expected milliseconds \(a number >= 0\), got -3"):
        jenkins.convert(("r.json", odd))
    with pytest.raises(RecordError, match="expected a Stage View run"):
        jenkins.convert(("r.json", {"what": 1}))
