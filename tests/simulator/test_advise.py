"""The advisor: ranked single changes, a best combination, and declared dependencies kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from engine.scenario import resolve
from simulator.advise import WARNING, advise, candidates
from simulator.whatif import plan_for
from tests.engine.test_properties import scenarios

ROOT = Path(__file__).resolve().parents[2]


def test_the_seed_example_is_advised_to_bypass_the_lock():
    raw = yaml.safe_load((ROOT / "scenarios" / "seed-parallel-steps.yaml").read_text())
    advice = advise(raw)
    assert advice.makespan == 15
    top = advice.changes[0]
    assert (top.change, top.saved, top.makespan) == ("bypass the target lock between 'deploy app' and 'warm cache'", 5, 10)
    assert advice.best_makespan == 10 and advice.best_lower_bound.value == 10
    assert "must not run in parallel" in advice.warning == WARNING


def test_changes_are_ranked_and_the_combination_is_no_worse_than_the_best_single_change():
    raw = yaml.safe_load((ROOT / "scenarios" / "db-then-fleets.yaml").read_text())
    advice = advise(raw)
    saved = [c.saved for c in advice.changes]
    assert saved == sorted(saved, reverse=True)
    assert advice.best_makespan <= min(c.makespan for c in advice.changes) + 1e-9
    assert advice.best_lower_bound.value <= advice.best_makespan + 1e-9


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_no_proposed_change_breaks_a_depends_on(raw):
    plan = resolve(raw)
    for change in candidates(plan):
        changed = plan_for(raw, change.settings, "x")
        for before, after in zip(plan.steps, changed.steps, strict=True):
            if before.depends_on is not None:
                assert after.depends_on == before.depends_on, change
                assert after.start == before.start, change
            if after.depends_on is not None and before.depends_on is None:
                # A narrowed barrier still waits for every earlier step that shares a
                # target or a resource with it.
                assert after.depends_on, change


def test_advise_command_runs(tmp_path):
    from typer.testing import CliRunner

    from abreast.cli import app

    result = CliRunner().invoke(app, ["advise", str(ROOT / "scenarios" / "microservices.yaml")])
    assert result.exit_code == 0, result.output
    assert "lower bound" in result.stdout and "must not run in parallel" in result.stdout


@pytest.mark.parametrize("name", ["microservices.yaml", "web-farm-rolling.yaml"])
def test_json_lists_every_change_tried(name):
    import json

    from typer.testing import CliRunner

    from abreast.cli import app

    result = CliRunner().invoke(app, ["advise", str(ROOT / "scenarios" / name), "--format", "json"])
    doc = json.loads(result.stdout)
    assert doc["changes"] and all({"change", "settings", "assumption", "makespan", "saved"} <= set(c) for c in doc["changes"])
