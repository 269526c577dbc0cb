"""`abreast report`: one HTML page of a deployment — simulated from a scenario file,
stored in the event store, or read from a JSON Lines history (SPEC §4, §7).

This module reads the source and gathers plain data; `abreast.htmlreport` draws it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from abreast.common import EXIT_OK, DbOption, app, bad_input

SCENARIO_SUFFIXES = (".yaml", ".yml", ".toml", ".json")


@app.command(
    epilog=(
        "Examples:\n\n"
        "  abreast report scenarios/web-farm-rolling.yaml -o web-farm.html\n\n"
        "  abreast report deploy.yaml -o grid.html --set max_parallel_targets=2,5,10 --set target_isolation=exclusive,shared\n\n"
        "  abreast report 20261127-101500-3fa2c1 -o release-42.html --db .abreast/abreast.db\n\n"
        "  abreast report release-42.jsonl -o release-42.html\n\n"
        "  abreast report release-42.jsonl -o replayed.html --set max_parallel_targets=1,10"
    )
)
def report(
    source: Annotated[
        str, typer.Argument(help="A scenario file (simulated), a deployment id in the store, or a .jsonl history.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=V1,V2,...",
            help="With a scenario: one value overrides a setting (as in simulate); several values make a what-if grid "
            "whose rows are drawn side by side. With a recorded deployment: each combination is a row, replayed with "
            "the recorded durations (as in replay). Repeatable; the first varies slowest.",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="With a scenario: the seed for sampled durations and failures (default 0).")] = None,
    db: DbOption = None,
) -> None:
    """Write one self-contained HTML page of a deployment: summary, timelines by step and
    by target, waits by cause, the critical path; with --set grids, the rows side by side.

    The page loads nothing from the network. Exit 0 once it is written (whatever the
    deployment's outcome); 2 on bad input."""
    from abreast import htmlreport

    kind = _kind_of(source)
    if kind == "scenario":
        page = _from_scenario(Path(source), set_ or [], seed if seed is not None else 0)
    else:
        if seed is not None:
            bad_input(f"{source}: --seed applies to a scenario file; a recorded deployment has its own durations")
        page = _from_history(Path(source), set_ or []) if kind == "history" else _from_store(db, source, set_ or [])
    text = htmlreport.build(page)
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as e:
        bad_input(f"{output}: cannot write: {e.strerror}")
    size = len(text.encode("utf-8"))
    typer.echo(f"wrote {output}: {size / 1024:,.0f} KiB, {len(page.main.attempts):,} attempts", err=True)
    typer.echo(str(output))
    raise typer.Exit(EXIT_OK)


def _kind_of(source: str) -> str:
    """scenario, history (a .jsonl file) or stored (a deployment id)."""
    path = Path(source)
    suffix = path.suffix.lower()
    if path.is_file():
        if suffix == ".jsonl":
            return "history"
        if suffix in SCENARIO_SUFFIXES:
            return "scenario"
        bad_input(f"{source}: not a scenario ({', '.join(SCENARIO_SUFFIXES)}) nor a history (.jsonl)")
    if suffix in (*SCENARIO_SUFFIXES, ".jsonl") or path.is_dir():
        bad_input(f"{source}: no such file")
    return "stored"


def _from_scenario(path: Path, sets: list[str], seed: int):  # noqa: ANN202 - htmlreport.Page
    from abreast import htmlreport
    from engine.scenario import ScenarioError, load, read_raw, resolve, warnings
    from simulator.durations import MissingDuration
    from simulator.whatif import combinations, parse_axes, plan_for

    file = str(path)
    try:
        raw = read_raw(path)
        axes = parse_axes(sets, file=file)
        grid = any(len(a.values) > 1 for a in axes)
        # One value each: overrides, exactly as `simulate --set` reads them.
        plan = resolve(raw, file=file) if grid else load(path, sets)
        settings_list = combinations(axes)
    except ScenarioError as e:
        bad_input(f"error: {e}")
    for w in warnings(plan):
        typer.echo(f"warning: {path}: {w}", err=True)
    described = f"simulated from {path}, seed {seed}"
    try:
        main = _simulated(plan, seed, "as written" if grid else "simulated")
        if not grid:
            if sets:
                described += " with " + ", ".join(sets)
            return htmlreport.Page(plan=plan, main=main, source=described, seed=seed)
        rows = []
        for settings in settings_list:
            label = ", ".join(f"{k}={v}" for k, v in settings.items())
            rows.append((settings, _simulated(plan_for(raw, settings, file), seed, label)))
    except ScenarioError as e:
        bad_input(f"error: {e}")
    except MissingDuration as e:
        bad_input(f"{path}: {e}")
    return htmlreport.Page(
        plan=plan,
        main=main,
        source=described + f"; what if: {len(rows)} arrangements",
        seed=seed,
        rows=_whatif_rows(rows, axes, main),
        axes=[a.key for a in axes],
    )


def _simulated(plan, seed: int, label: str):  # noqa: ANN001, ANN202
    from abreast import htmlreport
    from simulator.sim import simulate

    events: list = []
    result = simulate(plan, seed=seed, sink=events.extend)
    return htmlreport.arrangement_of(plan, events, label, sequential_makespan=result.sequential_makespan)


def _whatif_rows(rows, axes, main):  # noqa: ANN001, ANN202
    """The page's rows, flagged like `whatif` flags them (a more parallel row that is slower)."""
    from abreast import htmlreport
    from simulator.whatif import Row, mark_anomalies

    reference = main.makespan or 0.0
    marked = [
        Row(
            settings=settings,
            makespan=a.makespan or 0.0,
            sequential_makespan=a.sequential_makespan or 0.0,
            savings=round((a.sequential_makespan or 0.0) - (a.makespan or 0.0), 9),
            savings_vs_written=round(reference - (a.makespan or 0.0), 9),
            outcome=a.outcome or "?",
        )
        for settings, a in rows
    ]
    mark_anomalies(marked, axes, key=lambda r: r.makespan)
    return [
        htmlreport.WhatIfRow(settings=settings, arrangement=a, savings_vs_reference=r.savings_vs_written, anomaly=r.anomaly)
        for (settings, a), r in zip(rows, marked, strict=True)
    ]


def _from_store(db: Path | None, deployment: str, sets: list[str]):  # noqa: ANN202 - htmlreport.Page
    from abreast import htmlreport
    from engine.store import StoreError, default_db_path, open_store

    path = db if db is not None else default_db_path()
    if not Path(path).is_file():
        bad_input(f"{deployment}: no such file, and no event store at {path} to find a deployment of that id in")
    try:
        store = open_store(path)
    except StoreError as e:
        bad_input(str(e))
    try:
        events = store.read(deployment)
        if not events:
            bad_input(f"no deployment {deployment!r} in {path} (and no file of that name)")
        lines = store.output(deployment)
    finally:
        store.close()
    outputs: dict[tuple[str, str | None, int], list[str]] = {}
    for o in lines:
        outputs.setdefault((o.step, o.target, o.attempt), []).append(o.line)
    outputs_tail = {k: htmlreport.tail(v) for k, v in outputs.items()}
    return _recorded(events, f"deployment {deployment} in {path}", str(path), outputs_tail, sets)


def _from_history(path: Path, sets: list[str]):  # noqa: ANN202 - htmlreport.Page
    from engine.events import EventFormatError, from_jsonl

    try:
        with open(path, "rb") as f:
            events = list(from_jsonl(f, name=str(path)))
    except OSError as e:
        bad_input(f"{path}: cannot read: {e.strerror}")
    except EventFormatError as e:
        bad_input(str(e))
    return _recorded(events, f"history {path}", str(path), None, sets)


def _recorded(events: list, described: str, where: str, outputs, sets: list[str]):  # noqa: ANN001, ANN202
    """A page of a recorded log, checked first: it must fold through the core. With
    --set, every combination is a row: the log replayed under it (`simulator.replay`)."""
    import msgspec

    from abreast import htmlreport
    from engine.core import Core, IllegalMove
    from engine.events import DeploymentStarted
    from engine.plan import plan_from_builtins

    if not events:
        bad_input(f"{where}: no events")
    first = events[0]
    if not isinstance(first, DeploymentStarted):
        bad_input(f"{where}:1: expected deployment.started first")
    try:
        plan = plan_from_builtins(first.plan)
    except msgspec.ValidationError as e:
        bad_input(f"{where}:1: the plan in deployment.started is not valid: {e}")
    core = Core(plan, first.deployment)
    for n, ev in enumerate(events, 1):
        try:
            core.apply(ev)
        except IllegalMove as e:
            bad_input(f"{where}:{n}: {e}")
    options = first.options or {}
    sequential, note = None, "not known for a recorded run: replay re-simulates one"
    if options.get("dry_run"):
        # A dry run slept the scenario's sampled durations: the simulator knows them.
        from simulator.durations import MissingDuration
        from simulator.sim import sequential_makespan

        seed = int(options.get("seed", 0))
        try:
            sequential = sequential_makespan(plan, seed)
            described += f" (a dry run, seed {seed}; sequential makespan simulated with the same durations)"
        except MissingDuration:
            pass
    main = htmlreport.arrangement_of(plan, events, "as recorded", sequential_makespan=sequential, note=note)
    rows, axes = [], []
    if sets:
        axes, rows = _replayed(events, sets, where, main)
        described += f"; replayed with its recorded durations: {len(rows)} arrangements"
    return htmlreport.Page(
        plan=plan,
        main=main,
        source=described,
        title=plan.name or first.scenario,
        deployment=first.deployment,
        outputs=outputs,
        rows=rows,
        axes=[a.key for a in axes],
    )


def _replayed(events: list, sets: list[str], where: str, main):  # noqa: ANN001, ANN202
    """The log replayed under each --set combination, as `abreast replay` does, with each
    row's events kept to draw (and the sequential makespan replayed the same way)."""
    from abreast import htmlreport
    from engine.scenario import ScenarioError
    from simulator.durations import MissingDuration
    from simulator.replay import HistoryError, raw_of, read_history, replay_plan
    from simulator.whatif import combinations, parse_axes, plan_for

    arranged = []
    estimated: list[int] = []
    try:
        history = read_history(events, where)
        axes = parse_axes(sets, file="--set")
        raw = raw_of(history.plan)
        for settings in combinations(axes):
            plan = plan_for(raw, settings, where)
            log: list = []
            _, _, guessed = replay_plan(plan, history.attempts, history.seed, history.cancelled_at, sink=log.extend)
            sequential = replay_plan(plan.sequential(), history.attempts, history.seed, history.cancelled_at)[0]
            label = ", ".join(f"{k}={v}" for k, v in settings.items())
            arranged.append((settings, htmlreport.arrangement_of(plan, log, label, sequential_makespan=sequential, settings=settings)))
            estimated.append(len(guessed))
    except HistoryError as e:
        bad_input(str(e))
    except ScenarioError as e:
        bad_input(f"error: {e}")
    except MissingDuration as e:
        bad_input(f"{where}: {e}: the record has no attempt of it either; give it one with --set 'steps.NAME.duration=30s'")
    rows = _whatif_rows(arranged, axes, main)
    for row, n in zip(rows, estimated, strict=True):
        row.estimated = n
    return axes, rows
