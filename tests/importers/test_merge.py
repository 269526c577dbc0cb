"""Several runs of one process -> one scenario with the durations that really happened,
so `whatif --runs` shows their spread."""

from __future__ import annotations

from pathlib import Path

import yaml

from engine.scenario import resolve
from simulator.importers import github, octopus
from simulator.importers.merge import merge
from simulator.importers.record import parse_json, parse_yaml
from simulator.sim import simulate
from simulator.whatif import grid, parse_axes
from tests.importers import render

O = Path(__file__).resolve().parents[1] / "fixtures" / "histories" / "octopus"


def task(name: str):
    process = ("process.json", parse_json((O / "process.json").read_text(), "process.json"))
    machines = ("machines.json", parse_json((O / "machines.json").read_text(), "machines.json"))
    return octopus.convert((name, parse_json((O / name).read_text(), name)), process, machines=machines)


def test_two_octopus_deployments_fold_into_samples_per_step_and_target():
    scenario, notes = merge([task("task.json"), task("task-failed.json")])
    steps = {s["name"]: s for s in scenario["steps"]}
    web = steps["Deploy web"]["duration"]
    assert web["web-03"] == {"dist": "empirical", "samples": [9.417, 9.417]}
    assert web["default"]["samples"] == sorted([8.1, 7.942, 9.417, 8.6] * 2)
    assert "fails" not in steps["Deploy web"]
    assert "step 'Deploy web': 1 of 8 recorded attempts failed (their durations are among the samples)" in notes
    assert steps["Acquire packages"]["duration"] == {"dist": "empirical", "samples": [4.216, 4.216]}
    assert resolve(scenario).steps[2].duration.by_target["web-01"].samples == (8.1, 8.1)


def test_runs_of_one_workflow_give_whatif_the_spread_that_really_happened():
    raw = yaml.safe_load("""
        name: release
        targets: [{name: a, roles: [x]}, {name: b, roles: [x]}]
        steps:
          - {name: build, duration: {dist: uniform, low: 20, high: 60}}
          - {name: test, roles: [x], duration: {dist: lognormal, median: 30, p95: 90}}
          - {name: ship, duration: {dist: uniform, low: 1, high: 9}}
    """)
    plan = resolve(raw)
    runs = []
    for seed in range(5):
        events: list = []
        simulate(plan, seed=seed, sink=events.extend, sequential=False)
        files = render.github(plan, events, run_id=1000 + seed)
        flow = ("workflow.yml", parse_yaml(files["workflow.yml"], "workflow.yml"))
        runs.append(github.convert([(f"run{seed}.json", parse_json(files["jobs.json"], "jobs.json"))], flow))
    scenario, _ = merge(runs)
    build = next(s for s in scenario["steps"] if s["name"] == "build")
    assert build["duration"]["dist"] == "empirical" and len(build["duration"]["samples"]) == 5
    # Every Monte Carlo makespan is made of recorded durations: within what was recorded.
    (row,) = grid(scenario, parse_axes(["max_parallel_steps=10"]), runs=200)
    samples = {s["name"]: s["duration"] for s in scenario["steps"]}
    lowest = min(samples["build"]["samples"]) + min(samples["test"]["default"]["samples"]) + min(samples["ship"]["samples"])
    highest = max(samples["build"]["samples"]) + max(samples["test"]["default"]["samples"]) + max(samples["ship"]["samples"])
    assert lowest - 1e-9 <= row.p50 <= row.p95 <= row.max <= highest + 1e-9
    assert row.max > row.p50  # a spread, not one number
