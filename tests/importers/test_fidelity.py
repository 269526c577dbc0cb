"""Every importer on every fixture: how well the rules and the recorded durations explain
what was recorded (replay under the recorded policy; fidelity = |replayed - recorded| /
recorded). `pytest -s` prints the table the README shows."""

from __future__ import annotations

from pathlib import Path

from engine.core import Core
from engine.plan import plan_from_builtins
from simulator.importers import github, gitlab, jenkins, octopus
from simulator.importers.record import parse_json, parse_ocl, parse_yaml
from simulator.replay import replay

F = Path(__file__).resolve().parents[1] / "fixtures" / "histories"


def j(path: str) -> tuple[str, object]:
    return path, parse_json((F / path).read_text(), path)


def y(path: str) -> tuple[str, object]:
    return path, parse_yaml((F / path).read_text(), path)


def ocl(path: str) -> tuple[str, object]:
    return path, parse_ocl((F / path).read_text(), path)


def cases() -> list[tuple[str, str, list]]:
    o = "octopus/"
    full = {"machines": j(o + "machines.json"), "variables": j(o + "variables.json")}
    out = [
        ("octopus", "task + process.json + machines + variables", [octopus.convert(j(o + "task.json"), j(o + "process.json"), **full)]),
        ("octopus", "task + deployment_process.ocl + machines + variables", [octopus.convert(j(o + "task.json"), ocl(o + "deployment_process.ocl"), True, **full)]),
        ("octopus", "task only (process inferred)", [octopus.convert(j(o + "task.json"))]),
        ("octopus", "task-failed + process.json + machines + variables", [octopus.convert(j(o + "task-failed.json"), j(o + "process.json"), **full)]),
        ("octopus", "task-overlap (breaks the rules) + OCL + machines + variables", [octopus.convert(j(o + "task-overlap.json"), ocl(o + "deployment_process.ocl"), True, **full)]),
        ("github", "otel-cicd-action run 12456168064 + workflow", [github.convert([j("github/otel-cicd-action_run_12456168064_jobs.json")], y("github/otel-build.workflow.yml"))]),
        ("github", "otel-cicd-action run 12456168064 (needs inferred)", [github.convert([j("github/otel-cicd-action_run_12456168064_jobs.json")])]),
        ("github", "biomejs/biome run 12541749172", [github.convert([j("github/biomejs_biome_run_12541749172_jobs.json")])]),
        ("gitlab", "pipeline jobs + .gitlab-ci.yml", [gitlab.convert([j("gitlab/jobs.json")], y("gitlab/.gitlab-ci.yml"))]),
        ("gitlab", "pipeline jobs (stages and needs inferred)", [gitlab.convert([j("gitlab/jobs.json")])]),
        ("jenkins", "Blue Ocean nodes", jenkins.convert(j("jenkins_blueocean/pipeline-nodes-example.json"))),
    ]
    for name in ("03_rest_api_runs_checkpoint_rerun.json", "04_rest_api_runs_failed.json", "06_rest_api_runs.json"):
        out.append(("jenkins", f"wfapi {name} (every run)", jenkins.convert(j(f"jenkins_wfapi/{name}"), every_run=True)))
    return out


def test_every_importer_reports_its_fidelity_on_every_fixture():
    rows = []
    for tool, what, imported in cases():
        for one in imported:
            r = replay(one.events)
            rows.append((tool, what, one.record.id, r.recorded_makespan, r.makespan, r.fidelity, len(r.disagreements)))
    print()
    print("| importer | fixture | history | recorded | replayed | fidelity | disagreements |")
    print("|---|---|---|---:|---:|---:|---:|")
    for tool, what, hid, recorded, replayed, fidelity, bad in rows:
        print(f"| {tool} | {what} | {hid} | {recorded:.3f} s | {replayed:.3f} s | {100 * fidelity:.4f}% | {bad} |")
    by_tool: dict[str, list[float]] = {}
    for tool, what, _, _, _, fidelity, bad in rows:
        assert fidelity is not None
        by_tool.setdefault(tool, []).append(fidelity)
        assert (bad > 0) == ("overlap" in what), what
    # GitHub: within 1% of the recorded span; the others: what the model reproduces exactly.
    assert max(by_tool["github"]) <= 0.01
    for tool in ("octopus", "gitlab", "jenkins"):
        assert max(by_tool[tool]) < 1e-9, tool
    assert len(rows) == 11 + 2 + 2 + 4


def test_every_imported_log_folds_through_the_core_as_history_import_checks_it():
    for _, what, imported in cases():
        for one in imported:
            events = one.events
            core = Core(plan_from_builtins(events[0].plan), events[0].deployment).fold(events)
            assert core.done and core.outcome == one.record.outcome, what
