"""The command line: parses, calls the engine or the simulator, prints. Decides nothing.

Exit codes (SPEC §4): 0 success, 1 the deployment failed, 2 bad input (nothing ran),
130 cancelled.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from abreast import render

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130

app = typer.Typer(
    name="abreast",
    help="Run deployment steps side by side, record every deployment, and ask what-if in virtual time.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Format(str, Enum):
    table = "table"
    json = "json"


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """abreast: deployment steps side by side, an event log of every deployment, what-if in virtual time."""
    if version:
        from abreast import __version__

        typer.echo(f"abreast {__version__}")
        raise typer.Exit(EXIT_OK)


def bad_input(message: str) -> NoReturn:
    """Report bad input on stderr and exit 2: nothing ran."""
    typer.echo(message if message.startswith("error") else f"error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def outcome_exit(outcome: str | None) -> int:
    return {"succeeded": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}.get(outcome or "", EXIT_FAILED)


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
