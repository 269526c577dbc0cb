"""`duration: {dist: empirical, samples: [...]}`: recorded durations, drawn like every
other distribution (keyed on seed, step, target, attempt)."""

from __future__ import annotations

import pytest

from engine.plan import Empirical, PerTarget
from engine.scenario import ScenarioError, resolve
from simulator.durations import DurationModel, uniform
from simulator.sim import simulate
from tests.helpers import plan_of

PLAN = plan_of("""
    targets: [{name: t1, roles: [x]}, {name: t2, roles: [x]}]
    steps:
      - {name: srv, duration: {dist: empirical, samples: [30, 10, "20s"]}}
      - name: per
        roles: [x]
        duration: {t1: {dist: empirical, samples: [5]}, default: {dist: empirical, samples: [1, 2, 3, 4]}}
""")


def test_samples_are_kept_sorted_as_seconds():
    assert PLAN.steps[0].duration == Empirical(samples=(10.0, 20.0, 30.0))
    per = PLAN.steps[1].duration
    assert isinstance(per, PerTarget) and per.by_target["t1"] == Empirical(samples=(5.0,))


def test_a_draw_is_the_sample_at_the_keyed_quantile():
    model = DurationModel(PLAN, seed=7)
    for attempt in range(1, 200):
        u = uniform(7, "srv", None, attempt, "duration")
        assert model.duration(PLAN.steps[0], None, attempt) == (10.0, 20.0, 30.0)[int(u * 3)]
        assert model.duration(PLAN.steps[1], "t1", attempt) == 5.0
        assert model.duration(PLAN.steps[1], "t2", attempt) in (1.0, 2.0, 3.0, 4.0)


def test_every_sample_is_drawn_and_nothing_else():
    model = DurationModel(PLAN, seed=1)
    draws = [model.duration(PLAN.steps[0], None, a) for a in range(1, 3001)]
    assert set(draws) == {10.0, 20.0, 30.0}
    assert all(abs(draws.count(x) / 3000 - 1 / 3) < 0.05 for x in (10.0, 20.0, 30.0))


def test_a_simulation_draws_from_the_samples():
    for seed in range(20):
        model = DurationModel(PLAN, seed=seed)
        first = model.duration(PLAN.steps[0], None, 1)
        second = max(model.duration(PLAN.steps[1], "t1", 1), model.duration(PLAN.steps[1], "t2", 1))
        assert simulate(PLAN, seed=seed).makespan == first + second


@pytest.mark.parametrize(
    "duration,path,message",
    [
        ("{dist: empirical, samples: []}", "$.steps[0].duration.samples", "expected a non-empty list of durations"),
        ("{dist: empirical}", "$.steps[0].duration.samples", "expected a non-empty list of durations"),
        ("{dist: empirical, samples: [1, -2]}", "$.steps[0].duration.samples[1]", "expected seconds >= 0, got -2"),
        ("{dist: empirical, samples: [1, soon]}", "$.steps[0].duration.samples[1]", "expected seconds or a duration"),
        ("{dist: empirical, samples: [1], median: 3}", "$.steps[0].duration", "an empirical duration takes exactly samples; unknown median"),
    ],
)
def test_bad_samples_name_the_path(duration, path, message):
    import yaml

    with pytest.raises(ScenarioError) as e:
        resolve(yaml.safe_load(f"steps: [{{name: a, duration: {duration}}}]"), file="s.yaml")
    assert str(e.value).startswith(f"s.yaml: {path}: {message}")
