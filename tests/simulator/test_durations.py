"""Sampled durations: keyed draws (common random numbers) with the right shapes."""

from __future__ import annotations

import statistics

import pytest

from simulator.durations import DurationModel, MissingDuration, uniform
from tests.helpers import plan_of

PLAN = plan_of("""
    targets: [{name: t1, roles: [x]}, {name: t2, roles: [x]}]
    steps:
      - {name: ln, roles: [x], duration: {dist: lognormal, median: 60, p95: 180}}
      - {name: nrm, roles: [x], duration: {dist: normal, mean: 100, stddev: 10}}
      - {name: un, roles: [x], duration: {dist: uniform, low: 10, high: 20}}
      - {name: tr, roles: [x], duration: {dist: triangular, low: 0, mode: 10, high: 40}}
      - {name: map, roles: [x], duration: {t1: 5, default: 7}}
      - {name: srv, fails: {server: 2}, failure_rate: 0.5}
""")


def draws(step_index: int, n: int = 4000) -> list[float]:
    model = DurationModel(PLAN, seed=1)
    step = PLAN.steps[step_index]
    return [model.duration(step, "t1", attempt) for attempt in range(1, n + 1)]


def test_a_draw_depends_only_on_its_key():
    assert uniform(3, "a", "t", 1, "duration") == uniform(3, "a", "t", 1, "duration")
    keys = [(3, "a", "t", 2, "duration"), (4, "a", "t", 1, "duration"), (3, "b", "t", 1, "duration"),
            (3, "a", "u", 1, "duration"), (3, "a", "t", 1, "failure")]
    assert len({uniform(*k) for k in keys} | {uniform(3, "a", "t", 1, "duration")}) == 6
    assert all(0 < uniform(9, "s", None, i, "duration") < 1 for i in range(1000))


def test_lognormal_median_and_p95():
    xs = sorted(draws(0))
    assert statistics.median(xs) == pytest.approx(60, rel=0.08)
    assert xs[int(0.95 * len(xs))] == pytest.approx(180, rel=0.12)


def test_normal_uniform_triangular_shapes():
    assert statistics.mean(draws(1)) == pytest.approx(100, rel=0.02)
    assert statistics.stdev(draws(1)) == pytest.approx(10, rel=0.08)
    un = draws(2)
    assert 10 <= min(un) and max(un) <= 20 and statistics.mean(un) == pytest.approx(15, rel=0.02)
    tr = draws(3)
    assert 0 <= min(tr) and max(tr) <= 40 and statistics.mean(tr) == pytest.approx(50 / 3, rel=0.04)


def test_per_target_map_with_default():
    model = DurationModel(PLAN)
    step = PLAN.steps[4]
    assert (model.duration(step, "t1", 1), model.duration(step, "t2", 1)) == (5.0, 7.0)


def test_injected_failures_first_n_attempts_then_the_rate():
    model = DurationModel(PLAN, seed=5)
    step = PLAN.steps[5]
    assert model.fails(step, None, 1) and model.fails(step, None, 2)
    later = [model.fails(step, None, a) for a in range(3, 4003)]
    assert sum(later) / len(later) == pytest.approx(0.5, abs=0.03)


def test_a_step_without_a_duration_cannot_be_simulated():
    plan = plan_of("""
        targets: [{name: t1, roles: [x]}, {name: t2, roles: [x]}]
        steps:
          - {name: ok, duration: 1}
          - {name: partial, roles: [x], duration: {t1: 3}}
    """)
    with pytest.raises(MissingDuration, match="step 'partial' has no duration for target 't2'"):
        DurationModel(plan).check()
    with pytest.raises(MissingDuration, match="step 'bare' has no duration"):
        DurationModel(plan_of("steps: [{name: bare}]")).check()
