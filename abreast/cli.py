"""The command line: parses, calls the engine or the simulator, prints. Decides nothing.

Exit codes (docs/rules.md §4): 0 success, 1 the deployment failed, 2 bad input (nothing ran),
130 cancelled.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from abreast.common import EXIT_OK, Format, app, bad_input, interruptible, outcome_exit, run_app

__all__ = ["app", "main", "EXIT_OK"]


@app.command(
    epilog=(
        "Examples:\n\n"
        "  abreast simulate scenarios/seed-parallel-steps.yaml\n\n"
        "  abreast simulate deploy.yaml --set target_isolation=shared --set 'steps.deploy web.window=2'\n\n"
        "  abreast simulate deploy.yaml --format json --seed 7 --events run.jsonl"
    )
)
def simulate(
    scenario: Annotated[Path, typer.Argument(help="Scenario file (.yaml, .yml, .toml, .json).")],
    format: Annotated[Format, typer.Option("--format", "-f", help="table for people, json for scripts.")] = Format.table,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Override a policy field (max_parallel_steps=3) or a step field (steps.NAME.window=2). Repeatable.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for sampled durations and failures.")] = 0,
    events: Annotated[Path | None, typer.Option("--events", help="Also write the simulated event log here (JSON Lines).")] = None,
) -> None:
    """Simulate a deployment in virtual time: makespan, the sequential makespan, savings."""
    from abreast import render
    from engine.events import to_jsonl
    from engine.scenario import ScenarioError, load, warnings
    from simulator.durations import MissingDuration
    from simulator.sim import simulate as run_simulation

    try:
        plan = load(scenario, set_ or [])
    except ScenarioError as e:
        bad_input(f"error: {e}")
    for w in warnings(plan):
        typer.echo(f"warning: {scenario}: {w}", err=True)
    try:
        # The events file is closed (and what is left in its buffer written) before the
        # result is printed: a full disk is reported once, whenever it is noticed.
        with open(events, "wb") if events is not None else contextlib.nullcontext() as out:
            sink = (lambda batch: to_jsonl(batch, out)) if out is not None else None
            with interruptible():
                result = run_simulation(plan, seed=seed, sink=sink)
    except MissingDuration as e:
        bad_input(f"{scenario}: {e}")
    except OSError as e:
        if events is None:
            raise
        bad_input(f"{events}: cannot write: {e.strerror or e}")
    if format is Format.json:
        sys.stdout.buffer.write(render.simulation_json(result, seed, plan))
        sys.stdout.buffer.write(b"\n")
    else:
        render.simulation_table(result, plan, seed)
    raise typer.Exit(outcome_exit(result.report.outcome))


def main() -> None:
    """Console-script entry point."""
    run_app()


@app.command(
    epilog=(
        "Examples:\n\n"
        "  abreast whatif deploy.yaml --set max_parallel_steps=1,2,4,10\n\n"
        "  abreast whatif deploy.yaml --set target_isolation=exclusive,shared --set 'steps.deploy web.window=1,3,6' --runs 1000\n\n"
        "  abreast whatif deploy.yaml --set max_parallel_targets=5,10,20 --format json | jq '.rows[] | [.settings, .makespan]'"
    )
)
def whatif(
    scenario: Annotated[Path, typer.Argument(help="Scenario file (.yaml, .yml, .toml, .json).")],
    set_: Annotated[
        list[str],
        typer.Option(
            "--set",
            metavar="KEY=V1,V2,...",
            help="A setting and the values to try: a policy field (max_parallel_steps, max_parallel_targets, "
            "target_isolation, fail_fast) or a step field (steps.NAME.window, steps.NAME.start, steps.NAME.isolation). "
            "Repeat for a grid; the first varies slowest.",
        ),
    ],
    runs: Annotated[int | None, typer.Option("--runs", min=1, help="Also simulate each row under N seeds: p50, p90, p95, max.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the first run (the row's makespan); runs use seed … seed+N-1.")] = 0,
    format: Annotated[Format, typer.Option("--format", "-f", help="table for people, json for scripts.")] = Format.table,
) -> None:
    """Simulate the scenario under every combination of settings, side by side.

    Every row sees the same sampled durations (common random numbers). More parallelism
    is not always faster: rows slower than a less parallel neighbour are flagged."""
    from abreast import render
    from engine.scenario import ScenarioError, read_raw
    from simulator.durations import MissingDuration
    from simulator.whatif import grid, parse_axes

    try:
        raw = read_raw(scenario)
        axes = parse_axes(set_, file=str(scenario), raw=raw)
        with interruptible():
            rows = render.with_status(
                f"simulating {render.grid_size(axes)} rows" + (f" x {runs} runs" if runs else ""),
                lambda: grid(raw, axes, seed=seed, runs=runs, file=str(scenario)),
                enabled=format is Format.table,
            )
    except ScenarioError as e:
        bad_input(f"error: {e}")
    except MissingDuration as e:
        bad_input(f"{scenario}: {e}")
    if format is Format.json:
        import msgspec

        sys.stdout.buffer.write(msgspec.json.encode({"rows": rows}) + b"\n")
    else:
        render.whatif_table(rows, axes, runs)
    raise typer.Exit(EXIT_OK)


@app.command(
    epilog=(
        "Examples:\n\n  abreast advise scenarios/db-then-fleets.yaml\n\n  abreast advise deploy.yaml --seed 3 --format json\n\n"
        "  abreast advise scenarios/web-farm-rolling.yaml --allow-reorder"
    )
)
def advise(
    scenario: Annotated[Path, typer.Argument(help="Scenario file (.yaml, .yml, .toml, .json).")],
    seed: Annotated[int, typer.Option(help="Seed for sampled durations and failures.")] = 0,
    top: Annotated[int, typer.Option(min=1, help="How many changes to list (at least 1).")] = 10,
    allow_reorder: Annotated[
        bool,
        typer.Option(
            "--allow-reorder",
            help="Also offer changes that change the order in which steps run on a target (each says where and which steps).",
        ),
    ] = False,
    format: Annotated[Format, typer.Option("--format", "-f", help="table for people, json for scripts.")] = Format.table,
) -> None:
    """Rank single changes (with-previous, depends_on, a bigger window, a lock bypass)
    by the time they save, and find a good combination of them.

    By default only changes that keep, on every target, the order in which the steps
    ran there are offered. abreast cannot see hidden dependencies: each change says
    what it assumed, and how to try it (`abreast simulate ... --set ...`)."""
    from abreast import render
    from engine.scenario import ScenarioError, read_raw
    from simulator.advise import advise as run_advice
    from simulator.durations import MissingDuration

    try:
        raw = read_raw(scenario)
        with interruptible():
            advice = render.with_status(
                "simulating changes",
                lambda: run_advice(raw, seed=seed, file=str(scenario), allow_reorder=allow_reorder),
                enabled=format is Format.table,
            )
    except ScenarioError as e:
        bad_input(f"error: {e}")
    except MissingDuration as e:
        bad_input(f"{scenario}: {e}")
    if format is Format.json:
        import msgspec

        sys.stdout.buffer.write(msgspec.json.encode(advice) + b"\n")
    else:
        render.advice_table(advice, top, scenario=str(scenario), seed=seed)
    raise typer.Exit(EXIT_OK)


# The other commands register themselves on `app`.
from abreast import deploy as _deploy  # noqa: E402,F401
from abreast import history as _history  # noqa: E402,F401
from abreast import reporting as _reporting  # noqa: E402,F401
from abreast import histories as _histories  # noqa: E402,F401
