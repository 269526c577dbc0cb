"""The advisor: ranked single changes, a best combination, and declared dependencies kept."""

from __future__ import annotations

import json
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


# --- order on a target, and hints that run -------------------------------------------------


def first_starts(report) -> dict:
    """Per target (None: the server), the steps in the order they first started there."""
    out: dict = {}
    for row in report.rows:
        if row.attempt == 1 and row.step not in out.setdefault(row.target, []):
            out[row.target].append(row.step)
    return out


def same_order(before: dict, after: dict) -> bool:
    for target, steps in after.items():
        common = [s for s in steps if s in before.get(target, [])]
        if common != [s for s in before.get(target, []) if s in common]:
            return False
    return True


@pytest.mark.parametrize("name", ["web-farm-rolling.yaml", "db-then-fleets.yaml", "microservices.yaml", "seed-parallel-steps.yaml"])
def test_by_default_every_change_and_the_combination_keep_each_targets_order(name):
    from simulator.sim import run

    raw = yaml.safe_load((ROOT / "scenarios" / name).read_text())
    written = first_starts(run(resolve(raw)))
    advice = advise(raw)
    assert advice.withheld >= (1 if name != "seed-parallel-steps.yaml" else 0)
    for change in advice.changes:
        assert change.reorders == []
        assert same_order(written, first_starts(run(plan_for(raw, change.settings, "x")))), change.change
    combined = {k: v for c in advice.best for k, v in c.settings.items()}
    assert same_order(written, first_starts(run(plan_for(raw, combined, "x"))))


def test_the_web_farm_upgrade_may_overtake_the_push_only_when_asked_and_says_where():
    raw = yaml.safe_load((ROOT / "scenarios" / "web-farm-rolling.yaml").read_text())
    assert not any(c.change == "run 'upgrade web' with the previous step" for c in advise(raw).changes)
    allowed = advise(raw, allow_reorder=True)
    change = next(c for c in allowed.changes if c.change == "run 'upgrade web' with the previous step")
    # push package runs six servers at a time; upgrade web, now beside it, takes web-07..09
    # (free while the push is on web-01..06) before the package reaches them.
    assert [(r.first, r.then, r.targets) for r in change.reorders] == [("upgrade web", "push package", ["web-07", "web-08", "web-09"])]
    assert allowed.best_reorders and all(r.first == "upgrade web" for r in allowed.best_reorders)


def test_the_fleet_agent_upgrade_does_not_overtake_its_config_push_by_default():
    raw = yaml.safe_load((ROOT / "scenarios" / "fleet-1000.yaml").read_text())
    advice = advise(raw)
    assert not any("upgrade agent" in c.change and "with the previous step" in c.change for c in advice.changes)
    allowed = advise(raw, allow_reorder=True)
    moved = [r for c in allowed.changes for r in c.reorders if r.then == "push config"]
    assert moved and sum(len(r.targets) for r in moved) >= 100


AWKWARD = {
    "name": "awkward names",
    "targets": [{"name": f"h{i}", "roles": ["web"]} for i in range(4)] + [{"name": "db's", "roles": ["db"]}],
    "steps": [
        {"name": "it's a=b", "roles": ["db"], "duration": 30},
        {"name": "push $HOME `x`", "roles": ["web"], "duration": 10, "window": 1},
        {"name": "[/oops] yes", "roles": ["web"], "duration": 5, "window": 2},
        {"name": "on, off", "roles": ["db"], "duration": 3},
        {"name": "smoke", "duration": 2},
    ],
}


@pytest.mark.parametrize(
    "name,args",
    [
        ("web-farm-rolling.yaml", []),
        ("web-farm-rolling.yaml", ["--allow-reorder"]),
        ("db-then-fleets.yaml", ["--seed", "3"]),
        ("microservices.yaml", ["--allow-reorder"]),
        ("seed-parallel-steps.yaml", []),
        ("awkward.yaml", []),
        ("awkward.yaml", ["--allow-reorder"]),
    ],
)
def test_every_printed_hint_runs_when_pasted_into_a_shell(tmp_path, name, args):
    import os
    import re
    import shutil
    import subprocess
    import sys

    if name == "awkward.yaml":
        (tmp_path / name).write_text(yaml.safe_dump(AWKWARD, sort_keys=False))
    else:
        shutil.copy(ROOT / "scenarios" / name, tmp_path / name)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    shown = subprocess.run([sys.executable, "-m", "abreast", "advise", name, "--top", "20", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    hints = re.findall(r"^\s+(\d+\.|try it:) (abreast simulate .*)$", shown.stdout, re.M)
    assert hints, shown.stdout
    doc = json.loads(subprocess.run(
        [sys.executable, "-m", "abreast", "advise", name, "--format", "json", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    ).stdout)
    helpful = [c for c in doc["changes"] if c["saved"] > 1e-9]
    # `abreast` on PATH is this venv's; make sure the shell finds the one under test.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "abreast").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m abreast "$@"\n')
    (bin_dir / "abreast").chmod(0o755)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    for label, hint in hints:
        p = subprocess.run(hint + " --format json", shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode in (0, 1) and "Traceback" not in p.stderr, (hint, p.stderr)
        # ... and shows the makespan the advice promised.
        promised = doc["best_makespan"] if label == "try it:" else helpful[int(label[:-1]) - 1]["makespan"]
        assert json.loads(p.stdout)["makespan"] == pytest.approx(promised, abs=1e-9), hint
