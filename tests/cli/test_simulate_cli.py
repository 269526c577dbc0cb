"""`abreast simulate` as scripts and people use it: real processes, exit codes, output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from abreast.cli import app
from engine.events import from_jsonl

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
SEED = ROOT / "scenarios" / "seed-parallel-steps.yaml"


def abreast(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "abreast", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_json_output_for_scripts():
    p = abreast("simulate", str(SEED), "--format", "json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert (doc["makespan"], doc["sequential_makespan"], doc["savings"], doc["outcome"]) == (15.0, 15.0, 0.0, "succeeded")
    assert doc["steps"] == [
        {"name": "deploy app", "outcome": "succeeded", "start": 0.0, "end": 10.0},
        {"name": "warm cache", "outcome": "succeeded", "start": 0.0, "end": 15.0},
    ]
    assert doc["executions"][2] == {
        "step": "warm cache", "target": "web-01", "attempt": 1, "start": 10.0, "end": 15.0, "outcome": "succeeded"
    }


def test_set_overrides_a_policy_field():
    p = abreast("simulate", str(SEED), "--format", "json", "--set", "target_isolation=shared")
    doc = json.loads(p.stdout)
    assert (doc["makespan"], doc["sequential_makespan"], doc["savings"]) == (10.0, 15.0, 5.0)


def test_set_overrides_a_step_field_whose_name_has_spaces():
    # deploy app one server at a time: web-01 0-10; web-02 is passed over (window full)
    # and reserves nothing, so warm cache takes web-02 at 0-5; at 10 deploy app gets
    # web-02 (10-20) and warm cache web-01 (10-15). Makespan 20.
    p = abreast("simulate", str(SEED), "--format", "json", "--set", "steps.deploy app.window=1")
    doc = json.loads(p.stdout)
    assert doc["makespan"] == 20.0
    assert [(e["step"], e["target"], e["start"], e["end"]) for e in doc["executions"]] == [
        ("deploy app", "web-01", 0.0, 10.0),
        ("warm cache", "web-02", 0.0, 5.0),
        ("deploy app", "web-02", 10.0, 20.0),
        ("warm cache", "web-01", 10.0, 15.0),
    ]


def test_bad_input_exits_2_naming_file_and_path_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - {name: a}\n  - {name: b}\n  - {name: c, window: 0}\n")
    p = abreast("simulate", str(bad))
    assert p.returncode == 2
    assert p.stderr.strip() == f"error: {bad}: $.steps[2].window: expected `int` >= 1"
    assert "Traceback" not in p.stderr and p.stdout == ""


def test_a_bad_set_exits_2(tmp_path):
    p = abreast("simulate", str(SEED), "--set", "steps.nope.window=2")
    assert p.returncode == 2
    assert "no step named 'nope'" in p.stderr and "Traceback" not in p.stderr


def test_a_step_without_a_duration_cannot_be_simulated(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("steps:\n  - {name: build, run: make}\n")
    p = abreast("simulate", str(f))
    assert p.returncode == 2
    assert "step 'build' has no duration" in p.stderr


def test_a_failed_simulated_deployment_exits_1_and_still_prints(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("steps:\n  - {name: a, duration: 3, fails: {server: 1}}\n")
    p = abreast("simulate", str(f), "--format", "json")
    assert p.returncode == 1
    assert json.loads(p.stdout)["outcome"] == "failed"


def test_events_are_written_as_json_lines(tmp_path):
    out = tmp_path / "run.jsonl"
    p = abreast("simulate", str(SEED), "--events", str(out), "--format", "json")
    assert p.returncode == 0
    events = list(from_jsonl(out.read_bytes().splitlines()))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert type(events[-1]).__name__ == "DeploymentFinished" and events[-1].at == 15.0
    assert all(e.wall is None for e in events)


def test_the_table_shows_makespan_savings_and_a_timeline():
    p = abreast("simulate", str(ROOT / "scenarios" / "seed-parallel-steps-bypass.yaml"))
    assert p.returncode == 0
    assert "makespan    10s" in p.stdout
    assert "sequential  15s" in p.stdout
    assert "savings     5s (33.3%)" in p.stdout
    lines = [line for line in p.stdout.splitlines() if line.startswith(("deploy app", "warm cache"))]
    assert len(lines) == 2 and "█" in lines[0] and "█" in lines[1]


def test_help_shows_an_example():
    p = abreast("simulate", "--help")
    assert p.returncode == 0 and "abreast simulate" in p.stdout and "--set" in p.stdout


def test_warnings_go_to_stderr_and_json_stays_clean(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("targets: [{name: t, roles: [web]}]\nsteps:\n  - {name: a, roles: [dbb], duration: 1}\n")
    p = abreast("simulate", str(f), "--format", "json")
    assert p.returncode == 0
    assert "no target has any of the roles ['dbb']" in p.stderr
    assert json.loads(p.stdout)["steps"][0] == {"name": "a", "outcome": "succeeded", "start": 0.0, "end": 0.0}


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_every_bundled_scenario_simulates(path):
    result = CliRunner().invoke(app, ["simulate", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["makespan"] > 0 and doc["outcome"] == "succeeded"
    assert doc["savings"] == pytest.approx(doc["sequential_makespan"] - doc["makespan"])


def test_at_least_five_scenarios_ship():
    assert len(SCENARIOS) >= 5


def test_version_says_which_build_runs():
    import simulator.sim
    from abreast import __version__

    p = abreast("--version", cwd=ROOT)
    assert p.returncode == 0, p.stderr
    build = "pure Python" if simulator.sim.__file__.endswith(".py") else "compiled with mypyc"
    assert p.stdout == f"abreast {__version__} ({build})\n"
