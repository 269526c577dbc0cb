"""`abreast history`: list, show, export, import and read the logs of recorded deployments."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import msgspec
import typer

from abreast.common import EXIT_OK, DbOption, Format, app, bad_input, open_db

history = typer.Typer(
    help="Recorded deployments: list, show, export, import, logs.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(history, name="history")

IdArg = Annotated[str, typer.Argument(help="A deployment id (see `abreast history list`).")]


def _events_or_exit(store, id: str) -> list:  # noqa: ANN001
    events = store.read(id)
    if not events:
        bad_input(f"no deployment {id!r} in {store.path}")
    return events


@history.command("list", epilog="Example:\n\n  abreast history list --format json | jq '.[0].id'")
def list_(db: DbOption = None, format: Annotated[Format, typer.Option("--format", "-f")] = Format.table) -> None:
    """Every recorded deployment, newest first."""
    store = open_db(db)
    rows = store.deployments()
    store.close()
    if format is Format.json:
        sys.stdout.buffer.write(msgspec.json.encode(rows) + b"\n")
        return
    if not rows:
        typer.echo("no deployments recorded yet", err=True)
        return
    from rich.console import Console
    from rich.table import Table

    from abreast import render

    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1))
    table.add_column("id", no_wrap=True, min_width=max(len(r.id) for r in rows))
    table.add_column("status", no_wrap=True, min_width=9)
    table.add_column("started (UTC)", no_wrap=True, min_width=19)
    table.add_column("events", justify="right", no_wrap=True, min_width=6)
    table.add_column("scenario", overflow="ellipsis", no_wrap=True, ratio=1)
    for r in rows:
        table.add_row(r.id, render.styled(r.status), _short(r.started), str(r.events), r.scenario or "-")
    Console().print(table)


def _short(wall: str | None) -> str:
    """2026-11-27T15:31:33.123+00:00 -> 2026-11-27 15:31:33"""
    return wall[:19].replace("T", " ") if wall else "-"


@history.command(epilog="Example:\n\n  abreast history show 20261127-101500-3fa2c1 --format json")
def show(id: IdArg, db: DbOption = None, format: Annotated[Format, typer.Option("--format", "-f")] = Format.table) -> None:
    """One deployment: its outcome, makespan, steps and a timeline."""
    from abreast import render
    from engine.report import Report

    store = open_db(db)
    report = Report.of(_events_or_exit(store, id))
    store.close()
    if format is Format.json:
        sys.stdout.buffer.write(render.report_json(report) + b"\n")
    else:
        render.report_table(report)


@history.command(epilog="Example:\n\n  abreast history export 20261127-101500-3fa2c1 > release-42.jsonl")
def export(id: IdArg, db: DbOption = None) -> None:
    """Write a deployment's events to standard output as JSON Lines, in seq order."""
    from engine.events import to_jsonl

    store = open_db(db)
    events = _events_or_exit(store, id)
    store.close()
    to_jsonl(events, sys.stdout.buffer)


@history.command(
    "import",
    epilog=(
        "Examples:\n\n  abreast history import release-42.jsonl --db other.db\n\n"
        "  abreast simulate deploy.yaml --set max_parallel_targets=5 --events five.jsonl\n\n"
        "  abreast history import five.jsonl --id what-if-5"
    ),
)
def import_(
    file: Annotated[Path, typer.Argument(help="JSON Lines, as `history export` or `simulate --events` write them.")],
    db: DbOption = None,
    as_id: Annotated[
        str | None, typer.Option("--id", help="Store it under this id instead of its own (simulated logs are all 'simulation').")
    ] = None,
) -> None:
    """Store a recorded deployment from JSON Lines. It is checked first: one deployment,
    seq 1, 2, 3 … without gaps, starting with deployment.started, and every event legal
    under the rules (it is folded through the scheduling core)."""
    from engine.core import Core, IllegalMove
    from engine.events import DeploymentStarted, EventFormatError, from_jsonl
    from engine.plan import plan_from_builtins
    from engine.store import StoreError

    try:
        with open(file, "rb") as f:
            events = list(from_jsonl(f, name=str(file)))
    except OSError as e:
        bad_input(f"{file}: cannot read: {e.strerror}")
    except EventFormatError as e:
        bad_input(str(e))
    if not events:
        bad_input(f"{file}: no events")
    first = events[0]
    if not isinstance(first, DeploymentStarted) or first.seq != 1:
        bad_input(f"{file}:1: expected deployment.started with seq 1")
    ids = {e.deployment for e in events}
    if len(ids) != 1:
        bad_input(f"{file}: holds events of {len(ids)} deployments ({', '.join(sorted(ids))}); import one at a time")
    if as_id:
        events = [msgspec.structs.replace(e, deployment=as_id) for e in events]
        first = events[0]
    try:
        core = Core(plan_from_builtins(first.plan), first.deployment)
    except msgspec.ValidationError as e:
        bad_input(f"{file}:1: the plan in deployment.started is not valid: {e}")
    for n, ev in enumerate(events, 1):
        try:
            core.apply(ev)
        except IllegalMove as e:
            bad_input(f"{file}:{n}: {e}")
    store = open_db(db)
    try:
        if store.exists(first.deployment):
            bad_input(f"deployment {first.deployment!r} already exists in {store.path}; import it under another with --id")
        store.append(events)
    except StoreError as e:
        bad_input(str(e))
    finally:
        store.close()
    typer.echo(first.deployment)
    raise typer.Exit(EXIT_OK)


@history.command(epilog="Example:\n\n  abreast history logs 20261127-101500-3fa2c1 --step 'deploy web' --target web-02")
def logs(
    id: IdArg,
    db: DbOption = None,
    step: Annotated[str | None, typer.Option("--step", help="Only this step.")] = None,
    target: Annotated[str | None, typer.Option("--target", help="Only this target.")] = None,
) -> None:
    """The captured output of a deployment's executions."""
    store = open_db(db)
    _events_or_exit(store, id)
    lines = store.output(id, step=step, target=target)
    store.close()
    out = sys.stdout
    for o in lines:
        out.write(f"{o.step} @ {o.target or 'server'} #{o.attempt} | {o.line}\n")
