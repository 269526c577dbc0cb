"""`abreast import FORMAT` and `abreast replay` as scripts and people use them: real
processes, real files, a real SQLite store, exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
F = ROOT / "tests" / "fixtures" / "histories"
OCTO = F / "octopus"


def abreast(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "abreast", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_import_octopus_then_replay_as_json(tmp_path):
    out, log = tmp_path / "release.yaml", tmp_path / "release.jsonl"
    p = abreast(
        "import", "octopus", "--task", str(OCTO / "task.json"), "--process", str(OCTO / "deployment_process.ocl"),
        "--machines", str(OCTO / "machines.json"), "--variables", str(OCTO / "variables.json"), "-o", str(out), "--events", str(log),
    )
    assert p.returncode == 0, p.stderr
    assert "octopus-ServerTasks-4711: 7 steps, 13 executions, recorded makespan 39.609s (succeeded)" in p.stdout
    scenario = yaml.safe_load(out.read_text())
    assert scenario["steps"][2] == {"name": "Deploy web", "window": 2, "roles": ["web"], "duration": {"web-01": 8.1, "web-02": 7.942, "web-03": 9.417, "web-04": 8.6}}
    # The scenario simulates as recorded ...
    sim = json.loads(abreast("simulate", str(out), "--format", "json").stdout)
    assert sim["makespan"] == 39.609
    # ... and the log replays as recorded, and answers what-if.
    p = abreast("replay", str(log), "--set", "target_isolation=exclusive,shared", "--set", "steps.Deploy web.window=4", "--format", "json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert (doc["recorded_makespan"], doc["recorded_outcome"], doc["makespan"], doc["fidelity"]) == (39.609, "succeeded", 39.609, 0.0)
    assert [(r["settings"], r["makespan"], r["outcome"], r["savings_vs_recorded"], r["estimated"]) for r in doc["rows"]] == [
        ({"target_isolation": "exclusive", "steps.Deploy web.window": 4}, 34.742, "succeeded", 4.867, []),
        ({"target_isolation": "shared", "steps.Deploy web.window": 4}, 33.282, "succeeded", 6.327, []),
    ]


def test_the_replay_table_for_people(tmp_path):
    log = tmp_path / "ci.jsonl"
    assert abreast("import", "github", "--jobs", str(F / "github" / "otel-cicd-action_run_12456168064_jobs.json"), "-o", str(tmp_path / "ci.yaml"), "--events", str(log)).returncode == 0
    p = abreast("replay", str(log), "--set", "max_parallel_steps=1,2")
    assert p.returncode == 0, p.stderr
    assert "recorded    1m11s  succeeded" in p.stdout and "fidelity 0.000%" in p.stdout
    lines = [line.split() for line in p.stdout.splitlines()]
    assert ["1", "1m40s", "succeeded", "+29s", "0"] in lines and ["★", "2", "1m11s", "succeeded", "±0s", "0"] in lines


def test_a_history_in_the_store_replays_by_its_id(tmp_path):
    db, log = tmp_path / "a.db", tmp_path / "r.jsonl"
    abreast("import", "octopus", "--task", str(OCTO / "task.json"), "--process", str(OCTO / "process.json"), "-o", str(tmp_path / "r.yaml"), "--events", str(log))
    p = abreast("history", "import", str(log), "--db", str(db))
    assert p.returncode == 0 and p.stdout.strip() == "octopus-ServerTasks-4711", p.stderr
    p = abreast("replay", "octopus-ServerTasks-4711", "--db", str(db), "--format", "json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["makespan"] == 39.609
    p = abreast("replay", "nope", "--db", str(db))
    assert p.returncode == 2 and p.stderr.strip() == f"error: no deployment 'nope' in {db}"


def test_a_simulated_history_replays_like_simulate_set(tmp_path):
    log = tmp_path / "sim.jsonl"
    fleets = ROOT / "scenarios" / "db-then-fleets.yaml"
    abreast("simulate", str(fleets), "--seed", "3", "--events", str(log))
    doc = json.loads(abreast("replay", str(log), "--set", "max_parallel_steps=1", "--format", "json").stdout)
    expected = json.loads(abreast("simulate", str(fleets), "--seed", "3", "--set", "max_parallel_steps=1", "--format", "json").stdout)
    assert doc["makespan"] == doc["recorded_makespan"]
    assert doc["rows"][0]["makespan"] == expected["makespan"] and doc["rows"][0]["estimated"] == []


def test_merge_folds_runs_into_empirical_durations_for_whatif_runs(tmp_path):
    out = tmp_path / "wfx.yaml"
    p = abreast("import", "jenkins", "--run", str(F / "jenkins_wfapi" / "06_rest_api_runs.json"), "--merge", "-o", str(out))
    assert p.returncode == 0, p.stderr
    scenario = yaml.safe_load(out.read_text())
    assert scenario["steps"][2] == {"name": "Staging", "duration": {"dist": "empirical", "samples": [19.876, 380.013]}}
    p = abreast("whatif", str(out), "--set", "max_parallel_steps=1", "--runs", "200", "--format", "json")
    assert p.returncode == 0, p.stderr
    (row,) = json.loads(p.stdout)["rows"]
    # Every run draws each stage's duration from what was recorded for it.
    dev, qa = [7.516, 14.627], [15.037, 16.358]
    staging, production = [19.876, 380.013], [0.04, 0.064, 1.422, 2.402]
    possible = {round(a + b + c + d, 9) for a in dev for b in qa for c in staging for d in production}
    assert row["p50"] in possible and row["p95"] in possible and row["p95"] > 400


@pytest.mark.parametrize(
    "args,message",
    [
        (["import", "github", "--jobs", "MISSING.json", "-o", "x.yaml"], "error: MISSING.json: cannot read: No such file or directory"),
        (["import", "octopus", "--task", str(OCTO / "task.json"), "-o", "x.toml"], "error: x.toml: write the scenario as .yaml, .yml or .json"),
        (["import", "jenkins", "--run", str(F / "jenkins_wfapi" / "06_rest_api_runs.json"), "--merge", "-o", "x.yaml", "--events", "x.jsonl"],
         "error: --events writes one run's log; with --merge of several runs, import each run with --events on its own"),
        (["import", "octopus", "--task", str(OCTO / "task.json"), "--task", str(OCTO / "task-failed.json"), "-o", "x.yaml"],
         "error: 2 runs given: import one at a time, or fold them into one scenario with --merge"),
        (["replay", "missing.jsonl"], "error: missing.jsonl: cannot read: No such file or directory"),
        (["replay", "LOG", "--set", "steps.nope.window=1,2"], "error: --set steps.nope.window=1: 'steps.nope.window': no step named 'nope' (with steps.nope.window=1)"),
    ],
)
def test_bad_input_exits_2_with_one_clean_line(tmp_path, args, message):
    log = tmp_path / "log.jsonl"
    abreast("simulate", str(ROOT / "scenarios" / "seed-parallel-steps.yaml"), "--events", str(log))
    p = abreast(*[str(log) if a == "LOG" else a for a in args], cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.strip() == message.replace("LOG", str(log))
    assert "Traceback" not in p.stderr


def test_a_bad_record_names_the_file_and_the_json_path(tmp_path):
    task = json.loads((OCTO / "task.json").read_text())
    task["ActivityLogs"][0]["Children"][3]["Started"] = "soon"
    bad = tmp_path / "task.json"
    bad.write_text(json.dumps(task))
    p = abreast("import", "octopus", "--task", str(bad), "--process", str(OCTO / "process.json"), "-o", str(tmp_path / "x.yaml"))
    assert p.returncode == 2
    assert p.stderr.strip() == f"error: {bad}: $.ActivityLogs[0].Children[3].Started: expected an ISO-8601 time, got 'soon'"
    dup = tmp_path / "dup.json"
    dup.write_text('{"total_count": 1, "jobs": [{"name": "a", "name": "b"}]}')
    p = abreast("import", "github", "--jobs", str(dup), "-o", str(tmp_path / "x.yaml"))
    assert p.returncode == 2 and p.stderr.strip() == f"error: {dup}: $.jobs[0]: duplicate key 'name'"
    nan = tmp_path / "nan.json"
    nan.write_text('[{"id": 1, "name": "a", "status": "success", "duration": NaN}]')
    p = abreast("import", "gitlab", "--jobs", str(nan), "-o", str(tmp_path / "x.yaml"))
    assert p.returncode == 2 and p.stderr.strip() == f"error: {nan}: $[0].duration: expected a finite number, got NaN"
    unfinished = tmp_path / "u.jsonl"
    lines = (tmp_path / "u.jsonl")
    log = tmp_path / "full.jsonl"
    abreast("simulate", str(ROOT / "scenarios" / "seed-parallel-steps.yaml"), "--events", str(log))
    lines.write_text("".join(log.read_text().splitlines(keepends=True)[:-2]))
    p = abreast("replay", str(unfinished))
    assert p.returncode == 2 and p.stderr.strip() == f"error: {unfinished}: the deployment has not finished (no deployment.finished): resume it, then replay"
