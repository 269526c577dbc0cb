"""What-if grids and Monte Carlo: the same scenario under other settings, side by side.

Every row is simulated from the same raw scenario with its overrides applied, and with
the same seeds, so every row sees the same sampled durations (common random numbers):
the differences between rows are the settings' alone. Rows come in the order the values
were given, the first `--set` varying slowest.

With `runs=N`, each row is also simulated under N seeds (seed, seed+1, …) and reports
the p50, p90, p95 and max of the makespan. The work is spread over the machine's cores
in forked workers; the result depends only on the seeds, not on how it was spread.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import msgspec

from engine.plan import Plan
from engine.scenario import Problem, ScenarioError, parse_value, resolve, resolve_settings, show_value, split_setting
from simulator.sim import run, sequential_makespan


class Axis(msgspec.Struct, frozen=True):
    key: str
    values: tuple[Any, ...]
    texts: tuple[str, ...] = ()  # each value as it was typed (for messages)


class Row(msgspec.Struct, omit_defaults=True):
    settings: dict[str, Any]
    makespan: float
    sequential_makespan: float
    savings: float  # against the sequential makespan
    savings_vs_written: float  # against the scenario as written
    outcome: str
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    max: float | None = None
    anomaly: str | None = None  # a more parallel setting that is slower than a less parallel one


def parse_axes(sets: Sequence[str], file: str = "--set", raw: dict | None = None) -> list[Axis]:
    """`KEY=V1,V2,...` for each --set, in the order given. Values are split at the commas
    outside brackets, so a list (`depends_on=[a, b],[a]`) is one value. With the
    scenario's `raw` data a step name may hold `=` (see `split_setting`)."""
    axes = []
    for item in sets:
        found = split_setting(item, raw)
        key, text = found if found is not None else ("", "")
        texts = tuple(v.strip() for v in split_values(text))
        if not key or not text.strip() or not all(texts):
            raise ScenarioError(file, [_problem(item, f"expected KEY=V1,V2,..., got {item!r}")])
        if any(a.key == key for a in axes):
            raise ScenarioError(file, [_problem(item, f"{key!r} is set twice; give all its values in one --set")])
        axes.append(Axis(key=key, values=tuple(parse_value(v) for v in texts), texts=texts))
    return axes


def split_values(text: str) -> list[str]:
    """`1,2,[a, b],{x: 1}` -> ['1', '2', '[a, b]', '{x: 1}']: commas inside brackets or
    quotes belong to the value."""
    out, depth, quote, start = [], 0, "", 0
    for i, c in enumerate(text):
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return out


def _problem(item: str, message: str) -> Problem:
    return Problem("", message, origin=f"--set {item}")


def combinations(axes: Sequence[Axis]) -> list[dict[str, Any]]:
    """Every combination, the first axis varying slowest."""
    return [dict(zip([a.key for a in axes], values, strict=True)) for values in itertools.product(*(a.values for a in axes))]


def plan_for(raw: dict, settings: dict[str, Any], file: str, texts: dict[str, str] | None = None) -> Plan:
    """The plan of `raw` with `settings` applied; a problem names the `--set` that
    caused it (each value as `texts` gives it, else as YAML), and the whole combination."""
    shown = {k: (texts or {}).get(k) or show_value(v) for k, v in settings.items()}
    try:
        return resolve_settings(raw, settings, file=file, origins={k: f"--set {k}={t}" for k, t in shown.items()})
    except ScenarioError as e:
        where = ", ".join(f"{k}={t}" for k, t in shown.items())
        raise ScenarioError(e.file, [msgspec.structs.replace(p, message=f"{p.message} (with {where})") for p in e.problems]) from None


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank method: a value that occurred."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


# --- Monte Carlo workers (forked: they inherit the plans) ------------------------------

_PLANS: list[Plan] = []


def _makespans(task: tuple[int, int, int]) -> list[float]:
    row, first_seed, count = task
    plan = _PLANS[row]
    out = []
    for seed in range(first_seed, first_seed + count):
        makespan = run(plan, seed, report=False).makespan
        assert makespan is not None
        out.append(makespan)
    return out


def monte_carlo(plans: Sequence[Plan], seed: int, runs: int, workers: int | None = None) -> list[list[float]]:
    """For each plan, the makespans under seeds seed … seed+runs-1, in seed order."""
    global _PLANS
    workers = workers or int(os.environ.get("ABREAST_WORKERS", "0")) or min(os.cpu_count() or 1, 8)
    chunk = max(1, math.ceil(runs / (workers * 4)))
    tasks = [(row, s, min(chunk, seed + runs - s)) for row in range(len(plans)) for s in range(seed, seed + runs, chunk)]
    _PLANS = list(plans)
    try:
        if workers > 1 and hasattr(os, "fork") and runs * len(plans) > 1:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:
                try:
                    results = list(pool.map(_makespans, tasks))
                except BaseException:  # Ctrl-C: drop the chunks not started, wait only for the running ones
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
        else:
            results = [_makespans(t) for t in tasks]
    finally:
        _PLANS = []
    out: list[list[float]] = [[] for _ in plans]
    for (row, _, _), values in zip(tasks, results, strict=True):
        out[row].extend(values)
    return out


def grid(
    raw: dict,
    axes: Sequence[Axis],
    seed: int = 0,
    runs: int | None = None,
    file: str = "<scenario>",
    progress: Callable[[int, int], None] | None = None,
) -> list[Row]:
    """Simulate every combination of the axes (see the module docstring)."""
    written = resolve(raw, file=file)
    baseline = run(written, seed, report=False).makespan or 0.0
    settings_list = combinations(axes)
    texts_list = [dict(zip([a.key for a in axes], t, strict=True)) for t in itertools.product(*(a.texts or tuple(map(show_value, a.values)) for a in axes))]
    plans = [plan_for(raw, settings, file, texts) for settings, texts in zip(settings_list, texts_list, strict=True)]
    rows = []
    for i, (settings, plan) in enumerate(zip(settings_list, plans, strict=True)):
        report = run(plan, seed, report=False)
        makespan = report.makespan or 0.0
        seq = sequential_makespan(plan, seed)
        rows.append(
            Row(
                settings=settings,
                makespan=makespan,
                sequential_makespan=seq,
                savings=round(seq - makespan, 9),
                savings_vs_written=round(baseline - makespan, 9),
                outcome=report.outcome or "?",
            )
        )
        if progress is not None:
            progress(i + 1, len(plans))
    if runs:
        for row, values in zip(rows, monte_carlo(plans, seed, runs), strict=True):
            values.sort()
            row.p50, row.p90, row.p95, row.max = (percentile(values, 50), percentile(values, 90), percentile(values, 95), values[-1])
    mark_anomalies(rows, axes, key=(lambda r: r.p50) if runs else (lambda r: r.makespan))
    return rows


# Which way is "more parallel" for each kind of setting.
_MORE_PARALLEL = {
    "target_isolation": ["exclusive", "shared"],
    "isolation": ["exclusive", "shared"],
    "start": ["after-previous", "with-previous"],
    "fail_fast": [True, False],
}


def _rank(key: str, value: Any) -> float | None:
    field = key.rsplit(".", 1)[-1]
    if field in _MORE_PARALLEL:
        order = _MORE_PARALLEL[field]
        return float(order.index(value)) if value in order else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def mark_anomalies(rows: list[Row], axes: Sequence[Axis], key: Callable[[Row], float | None]) -> None:
    """Flag a row that is slower than a row differing only in one setting that is less
    parallel (a larger window, shared instead of exclusive…): greedy schedules do that."""
    key_of = msgspec.json.encode  # settings may hold lists (depends_on): compare them as JSON
    by_settings = {key_of(r.settings): r for r in rows}
    for row in rows:
        for axis in axes:
            mine = _rank(axis.key, row.settings[axis.key])
            if mine is None:
                continue
            for value in axis.values:
                other_rank = _rank(axis.key, value)
                if other_rank is None or other_rank >= mine:
                    continue
                other = by_settings.get(key_of({**row.settings, axis.key: value}))
                a, b = key(row), key(other) if other else None
                if a is not None and b is not None and a > b + 1e-9:
                    row.anomaly = f"slower than {axis.key}={value} ({a - b:g}s more)"
                    break
            if row.anomaly:
                break
