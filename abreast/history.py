"""`abreast history`: list, show, export, import and read the logs of recorded deployments."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import msgspec
import typer

from abreast.common import EXIT_OK, DbOption, Format, app, bad_input, check_id, id_problem, printable, speed_problem, using_store

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
    with using_store(db) as store:
        rows = store.deployments()
    if format is Format.json:
        sys.stdout.buffer.write(msgspec.json.encode(rows) + b"\n")
        return
    if not rows:
        typer.echo("no deployments recorded yet", err=True)
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from abreast import render

    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1))
    table.add_column("id", no_wrap=True, min_width=max(len(r.id) for r in rows))
    table.add_column("status", no_wrap=True, min_width=9)
    table.add_column("started (UTC)", no_wrap=True, min_width=19)
    table.add_column("events", justify="right", no_wrap=True, min_width=6)
    table.add_column("scenario", overflow="ellipsis", no_wrap=True, ratio=1)
    for r in rows:
        # Ids and names are text, never markup: a scenario called "[/oops]" prints as that.
        table.add_row(Text(r.id), render.styled(r.status), _short(r.started), str(r.events), Text(r.scenario or "-"))
    Console().print(table)


def _short(wall: str | None) -> str:
    """2026-11-27T15:31:33.123+00:00 -> 2026-11-27 15:31:33"""
    return wall[:19].replace("T", " ") if wall else "-"


@history.command(epilog="Example:\n\n  abreast history show 20261127-101500-3fa2c1 --format json")
def show(id: IdArg, db: DbOption = None, format: Annotated[Format, typer.Option("--format", "-f")] = Format.table) -> None:
    """One deployment: its outcome, makespan, steps and a timeline."""
    from abreast import render
    from engine.report import Report

    with using_store(db) as store:
        report = Report.of(_events_or_exit(store, id))
    if format is Format.json:
        sys.stdout.buffer.write(render.report_json(report) + b"\n")
    else:
        render.report_table(report)


@history.command(epilog="Example:\n\n  abreast history export 20261127-101500-3fa2c1 > release-42.jsonl")
def export(id: IdArg, db: DbOption = None) -> None:
    """Write a deployment's events to standard output as JSON Lines, in seq order, then
    what each attempt printed: one `execution.output` line per attempt (readers that do
    not know that type skip it; `history import` stores it again)."""
    from engine.events import output_records, to_jsonl

    with using_store(db) as store:
        events = _events_or_exit(store, id)
        output = store.output(id)
    to_jsonl(events, sys.stdout.buffer)
    to_jsonl(output_records((o.deployment, o.step, o.target, o.attempt, o.line) for o in output), sys.stdout.buffer)


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
        str | None,
        typer.Option(
            "--id", callback=check_id, help="Store it under this id instead of its own (simulated logs are all 'simulation')."
        ),
    ] = None,
) -> None:
    """Store a recorded deployment from JSON Lines. Nothing in it is trusted: one
    deployment, seq 1, 2, 3 … without gaps, time never going back, its plan checked like
    a scenario file, and every decision in it (steps started or skipped, executions
    started, outcomes) exactly what the scheduling rules decide from what happened to
    its executions: the log is folded through the core and compared, and the first
    event that parts from the rules is named by its line. Output lines
    (`execution.output`) are kept if they belong to attempts of the log."""
    from engine.events import DeploymentStarted, EventFormatError, ExecutionOutput, ExecutionStarted, read_jsonl
    from engine.plan import plan_from_builtins
    from engine.scenario import ScenarioError, check_plan, open_regular
    from engine.store import OutputLine
    from engine.verify import LogError, verify

    def unknown(n: int, kind: str) -> None:
        typer.echo(f"warning: {file}:{n}: skipped a line of type {kind!r}, which this abreast does not know", err=True)

    events: list = []
    numbers: list[int] = []  # the line of each event, for messages
    outputs: list[tuple[int, ExecutionOutput]] = []
    try:
        with open(file, "rb", opener=open_regular) as f:
            for n, record in read_jsonl(f, name=str(file), on_unknown=unknown):
                if type(record) is ExecutionOutput:
                    outputs.append((n, record))
                elif outputs:
                    bad_input(f"{file}:{n}: an event after the output lines; events come first, in seq order")
                else:
                    events.append(record)
                    numbers.append(n)
    except OSError as e:
        bad_input(f"{file}: cannot read: {e.strerror or e}")
    except EventFormatError as e:
        bad_input(str(e))
    if not events:
        bad_input(f"{file}: no events")
    first = events[0]
    if not isinstance(first, DeploymentStarted) or first.seq != 1:
        bad_input(f"{file}:{numbers[0]}: expected deployment.started with seq 1")
    ids = {e.deployment for e in events} | {o.deployment for _, o in outputs}
    if len(ids) != 1:
        bad_input(f"{file}: holds events of {len(ids)} deployments ({', '.join(sorted(map(repr, ids)))}); import one at a time")
    why = id_problem(first.deployment) if not as_id else None
    if why:
        bad_input(f"{file}:{numbers[0]}: {why}; import it under another with --id")
    if as_id:
        events = [msgspec.structs.replace(e, deployment=as_id) for e in events]
        outputs = [(n, msgspec.structs.replace(o, deployment=as_id)) for n, o in outputs]
        first = events[0]
    try:
        plan = check_plan(plan_from_builtins(first.plan), file=f"{file}:{numbers[0]}: the plan in deployment.started")
    except msgspec.ValidationError as e:
        bad_input(f"{file}:{numbers[0]}: the plan in deployment.started is not valid: {e}")
    except ScenarioError as e:
        bad_input(str(e))
    why = _options_problem(first.options)
    if why:
        bad_input(f"{file}:{numbers[0]}: the options in deployment.started: {why}")
    try:
        verify(events, plan)
    except LogError as e:
        bad_input(f"{file}:{numbers[e.index]}: {e.message}")
    started = {(e.step, e.target, e.attempt) for e in events if type(e) is ExecutionStarted}
    lines: list[OutputLine] = []
    for n, o in outputs:
        if (o.step, o.target, o.attempt) not in started:
            where = o.target if o.target is not None else "the server"
            bad_input(f"{file}:{n}: output of {o.step!r} on {where} (attempt {o.attempt}), an attempt the log never started")
        lines += [OutputLine(o.deployment, o.step, o.target, o.attempt, i, text) for i, text in enumerate(o.lines, 1)]
    with using_store(db, write=True) as store:
        if store.exists(first.deployment):
            bad_input(f"deployment {first.deployment!r} already exists in {store.path}; import it under another with --id")
        store.append(events)
        store.add_output(lines)
    typer.echo(first.deployment)
    raise typer.Exit(EXIT_OK)


def _options_problem(options: dict) -> str | None:
    """How the deployment was run (what `resume` goes on with): the values `run` takes."""
    dry_run, speed, seed = options.get("dry_run", False), options.get("speed", 1.0), options.get("seed", 0)
    if not isinstance(dry_run, bool):
        return f"dry_run: expected true or false, got {dry_run!r}"
    if speed_problem(speed):
        return f"speed: {speed_problem(speed)}"
    if isinstance(seed, bool) or not isinstance(seed, int):
        return f"seed: expected an integer, got {seed!r}"
    return None


@history.command(epilog="Example:\n\n  abreast history logs 20261127-101500-3fa2c1 --step 'deploy web' --target web-02")
def logs(
    id: IdArg,
    db: DbOption = None,
    step: Annotated[str | None, typer.Option("--step", help="Only this step.")] = None,
    target: Annotated[str | None, typer.Option("--target", help="Only this target.")] = None,
) -> None:
    """The captured output of a deployment's executions. Terminal control sequences in
    it (colours, cursor moves, titles) are removed: they are shown, never obeyed."""
    with using_store(db) as store:
        events = _events_or_exit(store, id)
        plan = getattr(events[0], "plan", {})
        steps = [s.get("name") for s in plan.get("steps", [])]
        targets = {t.get("name") for t in plan.get("targets", [])}
        if step is not None and step not in steps:
            bad_input(f"deployment {id!r} has no step {step!r}; its steps: {', '.join(map(repr, steps))}")
        server_only = target == "server" and "server" not in targets  # how a server step's lines are labelled
        if target is not None and target not in targets and not server_only:
            bad_input(f"deployment {id!r} has no target {target!r}" + (f"; its targets: {', '.join(map(repr, sorted(targets)))}" if targets else ""))
        lines = store.output(id, step=step, target=None if server_only else target)
        if server_only:
            lines = [o for o in lines if o.target is None]
    out = sys.stdout
    for o in lines:
        out.write(printable(f"{o.step} @ {o.target or 'server'} #{o.attempt} | {o.line}") + "\n")
