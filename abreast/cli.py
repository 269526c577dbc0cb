"""The command line: parses, calls the engine or the simulator, prints. Decides nothing.

Exit codes (SPEC §4): 0 success, 1 the deployment failed, 2 bad input (nothing ran),
130 cancelled.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from abreast.common import EXIT_OK, Format, app, bad_input, outcome_exit

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
    out = None
    try:
        if events is not None:
            try:
                out = open(events, "wb")  # noqa: SIM115 - closed below, after the run
            except OSError as e:
                bad_input(f"{events}: cannot write: {e.strerror}")
            sink = lambda batch: to_jsonl(batch, out)  # noqa: E731
        else:
            sink = None
        result = run_simulation(plan, seed=seed, sink=sink)
    except MissingDuration as e:
        bad_input(f"{scenario}: {e}")
    finally:
        if out is not None:
            out.close()
    if format is Format.json:
        sys.stdout.buffer.write(render.simulation_json(result, seed))
        sys.stdout.buffer.write(b"\n")
    else:
        render.simulation_table(result, plan, seed)
    raise typer.Exit(outcome_exit(result.report.outcome))


def main() -> None:
    """Console-script entry point."""
    app()


# The other commands register themselves on `app`.
from abreast import deploy as _deploy  # noqa: E402,F401
from abreast import history as _history  # noqa: E402,F401
