"""`abreast import FORMAT` and `abreast replay`: deployments other tools recorded, and
what a recorded deployment would have taken under other settings (SPEC §4, §5).

The importers and replay are pure (simulator/importers, simulator/replay.py); this
module reads the files, hands their parsed contents over, and writes and prints.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from abreast.common import EXIT_OK, DbOption, Format, app, bad_input, open_db

importer = typer.Typer(
    help="Import what Octopus Deploy, GitHub Actions, GitLab CI or Jenkins recorded: a scenario and its event log.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(importer, name="import")

OutputOption = Annotated[
    Path, typer.Option("--output", "-o", help="Write the scenario here (.yaml, .yml or .json).", show_default=False)
]
EventsOption = Annotated[
    Path | None,
    typer.Option("--events", help="Also write the recorded event log here (JSON Lines), for `abreast replay` and `history import`."),
]
MergeOption = Annotated[
    bool,
    typer.Option(
        "--merge",
        help="Each input is a separate run of the same process: fold them into one scenario whose durations "
        "are the recorded samples ({dist: empirical}), for `whatif --runs`.",
    ),
]


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        bad_input(f"{path}: cannot read: {e.strerror or e}")
    except UnicodeDecodeError:
        bad_input(f"{path}: not UTF-8 text")


def _doc(path: Path) -> tuple[str, Any]:
    """(name, parsed JSON) of a file, strictly parsed (exit 2 naming the place)."""
    from simulator.importers.record import RecordError, parse_json

    try:
        return str(path), parse_json(_text(path), str(path))
    except RecordError as e:
        bad_input(str(e))


def _yaml_doc(path: Path) -> tuple[str, Any]:
    from simulator.importers.record import RecordError, parse_yaml

    try:
        return str(path), parse_yaml(_text(path), str(path))
    except RecordError as e:
        bad_input(str(e))


def _run_importer(work: Callable[[], Any]) -> Any:
    from simulator.importers.record import RecordError

    try:
        return work()
    except RecordError as e:
        bad_input(str(e))


def _runs(docs: list, merge: bool, convert: Callable[[list], Any]) -> list:
    """The pages given are one run; with --merge each file is a run of its own."""
    if merge:
        return [_run_importer(lambda d=d: convert([d])) for d in docs]
    return [_run_importer(lambda: convert(docs))]


def _write_outputs(imported: list, output: Path, events: Path | None, merge: bool, source: str) -> None:
    """Write the scenario (and the log), print the notes and a summary."""
    from engine.events import to_jsonl
    from simulator.importers.merge import merge as merge_runs
    from simulator.importers.record import dump_json, dump_yaml

    if output.suffix.lower() not in (".yaml", ".yml", ".json"):
        bad_input(f"{output}: write the scenario as .yaml, .yml or .json")
    if len(imported) > 1 and not merge:
        bad_input(f"{len(imported)} runs given: import one at a time, or fold them into one scenario with --merge")
    if merge and events is not None and len(imported) > 1:
        bad_input("--events writes one run's log; with --merge of several runs, import each run with --events on its own")
    notes: list[str] = []
    for one in imported:
        notes += [f"{one.record.id}: {n}" for n in one.notes] if len(imported) > 1 else one.notes
    if merge:
        scenario, merge_notes = merge_runs(imported)
        notes += merge_notes
    else:
        scenario = imported[0].scenario
    last = imported[-1]
    header = [
        f"Imported by abreast from {source}.",
        "Durations are the recorded ones (seconds): `abreast simulate` reproduces the record;",
        "`abreast replay` on the event log replays it exactly as it was recorded.",
    ]
    if merge:
        header[1:] = [
            f"{len(imported)} runs folded: each duration is the recorded samples ({{dist: empirical}});",
            "`abreast whatif --runs N` draws from them.",
        ]
    text = dump_json(scenario) if output.suffix.lower() == ".json" else dump_yaml(scenario, header)
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as e:
        bad_input(f"{output}: cannot write: {e.strerror or e}")
    if events is not None:
        try:
            with open(events, "wb") as f:
                to_jsonl(last.events, f)
        except OSError as e:
            bad_input(f"{events}: cannot write: {e.strerror or e}")
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    from abreast.render import seconds

    for one in imported:
        rec = one.record
        executions = sum(1 for s in rec.steps for e in s.executions if e.attempts)
        typer.echo(
            f"{rec.id}: {len(rec.steps)} steps, {executions} executions, recorded makespan "
            f"{seconds((rec.end - rec.start) / 1e9)} ({rec.outcome})"
        )
    typer.echo(f"wrote {output}" + (f" and {events}" if events is not None else ""))
    raise typer.Exit(EXIT_OK)


@importer.command(
    "octopus",
    epilog=(
        "Examples:\n\n"
        "  abreast import octopus --task task.json --process process.json --machines machines.json "
        "--variables variables.json -o release.yaml --events release.jsonl\n\n"
        "  abreast import octopus --task task.json --process .octopus/deployment_process.ocl -o release.yaml\n\n"
        "  abreast import octopus --task t1.json --task t2.json --task t3.json --process process.json --merge -o spread.yaml"
    ),
)
def import_octopus(
    task: Annotated[list[Path], typer.Option("--task", help="Task details: /api/tasks/{id}/details (JSON).", show_default=False)],
    output: OutputOption,
    process: Annotated[
        Path | None, typer.Option("--process", help="The deployment process: /api/deploymentprocesses/{id} (JSON) or deployment_process.ocl.")
    ] = None,
    machines: Annotated[Path | None, typer.Option("--machines", help="/api/machines (JSON): each machine's roles.")] = None,
    variables: Annotated[Path | None, typer.Option("--variables", help="/api/variables/{id} (JSON): the project's variables.")] = None,
    events: EventsOption = None,
    merge: MergeOption = False,
) -> None:
    """Import an Octopus Deploy deployment from its task log (and its process, machines,
    variables): steps and start triggers, roles and windows, MaxParallelism and the
    deployment mutex, each target's recorded times and outcomes."""
    from simulator.importers import octopus
    from simulator.importers.record import RecordError, parse_ocl

    proc = None
    is_ocl = False
    if process is not None:
        if process.suffix.lower() == ".ocl":
            is_ocl = True
            try:
                proc = (str(process), parse_ocl(_text(process), str(process)))
            except RecordError as e:
                bad_input(str(e))
        else:
            proc = _doc(process)
    mach = _doc(machines) if machines is not None else None
    var = _doc(variables) if variables is not None else None
    results = [
        _run_importer(lambda t=t: octopus.convert(_doc(t), proc, is_ocl, mach, var)) for t in task
    ]
    _write_outputs(results, output, events, merge, "Octopus Deploy: " + ", ".join(str(t) for t in task))


@importer.command(
    "github",
    epilog=(
        "Examples:\n\n"
        "  gh api --paginate repos/OWNER/REPO/actions/runs/RUN/jobs > jobs.json\n\n"
        "  abreast import github --jobs jobs.json --workflow .github/workflows/ci.yml -o ci.yaml --events ci.jsonl\n\n"
        "  abreast import github --jobs page1.json --jobs page2.json -o ci.yaml\n\n"
        "  abreast import github --jobs run1.json --jobs run2.json --jobs run3.json --merge -o ci.yaml"
    ),
)
def import_github(
    jobs: Annotated[
        list[Path],
        typer.Option(
            "--jobs",
            help="Jobs of a run: /actions/runs/{id}/jobs (one page, several pages or a list). Repeat for more pages "
            "(with --merge: one file per run).",
            show_default=False,
        ),
    ],
    output: OutputOption,
    workflow: Annotated[Path | None, typer.Option("--workflow", help="The workflow file: needs, matrix max-parallel, if.")] = None,
    events: EventsOption = None,
    merge: MergeOption = False,
) -> None:
    """Import a GitHub Actions run: each job a step, the instances of a matrix job the
    targets of one step, `needs` as depends_on (inferred from the times without the
    workflow). A job's time runs from when it could start to its end: the wait for a
    runner goes with it."""
    from simulator.importers import github

    flow = _yaml_doc(workflow) if workflow is not None else None
    results = _runs([_doc(j) for j in jobs], merge, lambda docs: github.convert(docs, flow))
    _write_outputs(results, output, events, merge, "GitHub Actions: " + ", ".join(str(j) for j in jobs))


@importer.command(
    "gitlab",
    epilog=(
        "Examples:\n\n"
        "  abreast import gitlab --jobs jobs.json --ci .gitlab-ci.yml -o pipeline.yaml --events pipeline.jsonl\n\n"
        "  abreast import gitlab --jobs p1.json --jobs p2.json --merge --ci .gitlab-ci.yml -o pipeline.yaml"
    ),
)
def import_gitlab(
    jobs: Annotated[
        list[Path],
        typer.Option(
            "--jobs",
            help="Jobs of a pipeline: /projects/:id/pipelines/:pid/jobs (a list, or a list of pages). Repeat for more "
            "pages (with --merge: one file per pipeline).",
            show_default=False,
        ),
    ],
    output: OutputOption,
    ci: Annotated[Path | None, typer.Option("--ci", help="The .gitlab-ci.yml: stages, needs, parallel: matrix, resource_group.")] = None,
    events: EventsOption = None,
    merge: MergeOption = False,
) -> None:
    """Import a GitLab CI pipeline: stages in order, the jobs of a stage side by side,
    `needs` as depends_on, `parallel` instances as the targets of one step,
    `resource_group` as a resource of capacity 1."""
    from simulator.importers import gitlab

    ci_doc = _yaml_doc(ci) if ci is not None else None
    results = _runs([_doc(j) for j in jobs], merge, lambda docs: gitlab.convert(docs, ci_doc))
    _write_outputs(results, output, events, merge, "GitLab CI: " + ", ".join(str(j) for j in jobs))


@importer.command(
    "jenkins",
    epilog=(
        "Examples:\n\n"
        "  curl -s $JENKINS/job/app/42/wfapi/describe > describe.json\n\n"
        "  abreast import jenkins --run describe.json -o app.yaml --events app.jsonl\n\n"
        "  abreast import jenkins --run nodes.json -o app.yaml   # Blue Ocean: .../runs/42/nodes/\n\n"
        "  abreast import jenkins --run runs.json --merge -o app.yaml   # wfapi/runs: every run folded"
    ),
)
def import_jenkins(
    run: Annotated[
        list[Path],
        typer.Option("--run", help="Stage View wfapi/describe (or wfapi/runs), or Blue Ocean nodes.", show_default=False),
    ],
    output: OutputOption,
    events: EventsOption = None,
    merge: MergeOption = False,
) -> None:
    """Import a Jenkins Pipeline run: its stages in order and the branches of a
    `parallel` side by side (Blue Ocean nodes)."""
    from simulator.importers import jenkins

    results = []
    for r in run:
        doc = _doc(r)
        results += _run_importer(lambda d=doc: jenkins.convert(d, every_run=merge))
    _write_outputs(results, output, events, merge, "Jenkins: " + ", ".join(str(r) for r in run))


# --- replay ---------------------------------------------------------------------------


def _history_events(source: str, db: Path | None) -> tuple[list, str]:
    """The events of SOURCE: a .jsonl file, or a deployment id in the store."""
    from engine.events import EventFormatError, from_jsonl

    path = Path(source)
    if path.suffix.lower() == ".jsonl" or path.is_file():
        import msgspec

        from engine.events import AnyEvent

        try:
            data = path.read_bytes()
        except OSError as e:
            bad_input(f"{path}: cannot read: {e.strerror or e}")
        try:
            return msgspec.json.Decoder(AnyEvent).decode_lines(data), str(path)  # all lines at once: fast
        except msgspec.DecodeError:
            try:  # a bad line: find it, and say which
                return list(from_jsonl(data.splitlines(), name=str(path))), str(path)
            except EventFormatError as e:
                bad_input(str(e))
    from abreast.history import _events_or_exit

    store = open_db(db)
    try:
        return _events_or_exit(store, source), source
    finally:
        store.close()


@app.command(
    epilog=(
        "Examples:\n\n"
        "  abreast replay release.jsonl\n\n"
        "  abreast replay release.jsonl --set max_parallel_steps=1,2,4 --set target_isolation=exclusive,shared\n\n"
        "  abreast replay 20261127-101500-3fa2c1 --set 'steps.deploy web.window=2,5' --format json | jq '.rows[] | [.settings, .makespan]'"
    )
)
def replay(
    source: Annotated[str, typer.Argument(help="A history: a .jsonl event log, or a deployment id in the store.")],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=V1,V2,...",
            help="A setting and the values to try, as in `whatif` (a policy field, or steps.NAME.FIELD). Repeat for a "
            "grid; the first varies slowest.",
        ),
    ] = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="table for people, json for scripts.")] = Format.table,
    db: DbOption = None,
) -> None:
    """Replay a recorded deployment under the rules with the durations and outcomes it
    recorded: how well the rules explain it (fidelity), and with --set what it would
    have taken under other settings. Executions the record has no time for are
    estimated and listed."""
    from engine.scenario import ScenarioError
    from simulator.durations import MissingDuration
    from simulator.replay import HistoryError, replay as run_replay
    from simulator.whatif import parse_axes

    events, name = _history_events(source, db)
    try:
        axes = parse_axes(set_ or [], file="--set")
        result = run_replay(events, axes, name=name)
    except HistoryError as e:
        bad_input(str(e))
    except ScenarioError as e:
        bad_input(f"error: {e}")
    except MissingDuration as e:
        bad_input(f"{name}: {e}: the record has no attempt of it either; give it one with --set 'steps.NAME.duration=30s'")
    if format is Format.json:
        import msgspec

        sys.stdout.buffer.write(msgspec.json.encode(result) + b"\n")
    else:
        _replay_table(result, axes)
    raise typer.Exit(EXIT_OK)


def _signed(t: float) -> str:
    from abreast.render import seconds

    if abs(t) < 5e-10:
        return "±0s"
    return ("-" if t > 0 else "+") + seconds(abs(t))


def _replay_table(r, axes) -> None:  # noqa: ANN001 - simulator.replay.Replay, whatif axes
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from abreast.render import seconds, styled

    console = Console()
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("deployment", f"{r.deployment}" + (f" ({r.scenario})" if r.scenario else ""))
    summary.add_row("recorded", Text.assemble(f"{seconds(r.recorded_makespan)}  ", styled(r.recorded_outcome)))
    fidelity = "-" if r.fidelity is None else f"{100 * r.fidelity:.3f}%"
    summary.add_row(
        "replayed",
        Text.assemble(f"{seconds(r.makespan)}  ", styled(r.outcome), f"  fidelity {fidelity} (under the recorded policy)"),
    )
    if r.estimated:
        summary.add_row("estimated", f"{len(r.estimated)} attempts had no recorded duration (see --format json)")
    console.print(summary)
    if r.disagreements:
        console.print()
        total = len(r.disagreements) + r.disagreements_not_listed
        console.print(Text(f"the record and the rules disagree ({total}):", style="yellow"))
        for d in r.disagreements:
            console.print(Text(f"  • {d}", style="yellow"))
        if r.disagreements_not_listed:
            console.print(Text(f"  … and {r.disagreements_not_listed} more", style="yellow"))
    if not r.rows:
        return
    console.print()
    best = min(range(len(r.rows)), key=lambda i: (r.rows[i].makespan, i))
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("")
    for a in axes:
        table.add_column(a.key, overflow="fold")
    table.add_column("makespan", justify="right")
    table.add_column("outcome")
    table.add_column("vs recorded", justify="right")
    table.add_column("estimated", justify="right")
    for i, row in enumerate(r.rows):
        cells: list[Any] = ["★" if i == best else ""]
        cells += [str(row.settings[a.key]) for a in axes]
        cells += [seconds(row.makespan), styled(row.outcome), _signed(row.savings_vs_recorded), str(len(row.estimated))]
        table.add_row(*cells, style="bold" if i == best else None)
    console.print(table)
    console.print(
        Text("vs recorded: - faster, + slower than what was recorded; estimated: attempts with no recorded duration", style="dim")
    )
