"""What-if grids and Monte Carlo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from abreast.cli import app
from engine.scenario import ScenarioError
from simulator.whatif import combinations, grid, monte_carlo, parse_axes, percentile, plan_for, split_values

ROOT = Path(__file__).resolve().parents[2]
FLEETS = ROOT / "scenarios" / "db-then-fleets.yaml"


def raw_of(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_the_first_set_varies_slowest():
    axes = parse_axes(["max_parallel_steps=1,2", "steps.deploy web.window=1,3,6"])
    assert combinations(axes) == [
        {"max_parallel_steps": 1, "steps.deploy web.window": 1},
        {"max_parallel_steps": 1, "steps.deploy web.window": 3},
        {"max_parallel_steps": 1, "steps.deploy web.window": 6},
        {"max_parallel_steps": 2, "steps.deploy web.window": 1},
        {"max_parallel_steps": 2, "steps.deploy web.window": 3},
        {"max_parallel_steps": 2, "steps.deploy web.window": 6},
    ]


def test_grid_rows_equal_separate_simulate_runs():
    sets = ["max_parallel_steps=1,4", "steps.deploy web.window=1,6", "target_isolation=exclusive,shared"]
    result = CliRunner().invoke(app, ["whatif", str(FLEETS), "--seed", "5", "--format", "json", *sum((["--set", s] for s in sets), [])])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert len(rows) == 8
    for row in rows:
        args = sum((["--set", f"{k}={v}"] for k, v in row["settings"].items()), [])
        sim = CliRunner().invoke(app, ["simulate", str(FLEETS), "--seed", "5", "--format", "json", *args])
        doc = json.loads(sim.stdout)
        assert (row["makespan"], row["sequential_makespan"], row["savings"]) == (
            doc["makespan"], doc["sequential_makespan"], doc["savings"]
        ), row["settings"]


def test_savings_against_the_scenario_as_written():
    rows = grid(raw_of(FLEETS), parse_axes(["max_parallel_steps=1,4"]), seed=0)
    written = grid(raw_of(FLEETS), parse_axes(["max_parallel_steps=4"]), seed=0)[0]  # as written: 4
    assert written.savings_vs_written == 0
    assert rows[0].savings_vs_written == pytest.approx(written.makespan - rows[0].makespan)
    assert rows[0].savings_vs_written < 0  # one step at a time is slower


def test_a_greedy_anomaly_is_shown_not_hidden():
    rows = grid(raw_of(ROOT / "scenarios" / "greedy-anomaly.yaml"), parse_axes(["steps.A.window=1,2"]))
    assert [(r.makespan, r.anomaly) for r in rows] == [(40.0, None), (50.0, "slower than steps.A.window=1 (10s more)")]


def test_monte_carlo_is_reproducible_ordered_and_spread_independent():
    plan = plan_for(raw_of(ROOT / "scenarios" / "web-farm-rolling.yaml"), {}, "x")
    one = monte_carlo([plan], seed=7, runs=40, workers=1)[0]
    two = monte_carlo([plan], seed=7, runs=40, workers=2)[0]
    assert one == two
    assert len(set(one)) > 10  # the seeds do change the draws
    rows = grid(raw_of(ROOT / "scenarios" / "web-farm-rolling.yaml"), parse_axes(["steps.upgrade web.window=2,6"]), seed=7, runs=40)
    again = grid(raw_of(ROOT / "scenarios" / "web-farm-rolling.yaml"), parse_axes(["steps.upgrade web.window=2,6"]), seed=7, runs=40)
    assert rows == again
    for r in rows:
        assert r.p50 <= r.p90 <= r.p95 <= r.max
    # Common random numbers: the row's first run is the seed run itself.
    assert rows[0].makespan == monte_carlo([plan_for(raw_of(ROOT / "scenarios" / "web-farm-rolling.yaml"), {"steps.upgrade web.window": 2}, "x")], 7, 1, 1)[0][0]


def test_percentiles_by_nearest_rank():
    values = sorted(float(v) for v in range(1, 101))
    assert (percentile(values, 50), percentile(values, 90), percentile(values, 95), percentile(values, 100)) == (50, 90, 95, 100)
    assert percentile([3.0], 95) == 3.0


def test_bad_sets_are_named():
    with pytest.raises(ScenarioError, match="expected KEY=V1,V2"):
        parse_axes(["max_parallel_steps"])
    with pytest.raises(ScenarioError, match="set twice"):
        parse_axes(["max_parallel_steps=1", "max_parallel_steps=2"])
    with pytest.raises(ScenarioError, match=r"\$.policy.max_parallel_steps: expected `int` >= 1 \(with max_parallel_steps=0\)"):
        grid(raw_of(FLEETS), parse_axes(["max_parallel_steps=0,1"]))


def test_whatif_command_exit_codes_and_table():
    p = subprocess.run(
        [sys.executable, "-m", "abreast", "whatif", str(ROOT / "scenarios" / "greedy-anomaly.yaml"), "--set", "steps.A.window=1,2"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert p.returncode == 0
    assert "★" in p.stdout and "⚠ slower than steps.A.window=1" in p.stdout
    bad = subprocess.run([sys.executable, "-m", "abreast", "whatif", str(FLEETS), "--set", "steps.nope.window=1,2"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "no step named 'nope'" in bad.stderr and "Traceback" not in bad.stderr


def test_values_split_at_commas_outside_brackets_and_quotes():
    assert split_values('1,2, [a, b],{x: 1, y: 2},"c, d"') == ["1", "2", " [a, b]", "{x: 1, y: 2}", '"c, d"']
    axes = parse_axes(["steps.deploy web.depends_on=[migrate],[migrate, backup database],[]"])
    assert axes[0].values == (["migrate"], ["migrate", "backup database"], [])


def test_depends_on_varies_like_any_other_setting_and_anomalies_compare_lists():
    raw = raw_of(FLEETS)
    first = raw["steps"][0]["name"]
    axes = parse_axes([f"steps.warm caches.depends_on=[{first}],[deploy web, deploy api]", "max_parallel_steps=1,2"], raw=raw)
    rows = grid(raw, axes)
    assert [r.settings["steps.warm caches.depends_on"] for r in rows] == [[first], [first], ["deploy web", "deploy api"], ["deploy web", "deploy api"]]
    for r in rows:
        plan = plan_for(raw, r.settings, "x")
        assert next(s for s in plan.steps if s.name == "warm caches").depends_on == tuple(r.settings["steps.warm caches.depends_on"])
