"""How results look: JSON for scripts (its fields are listed in the README), rich tables and timelines for people."""

from __future__ import annotations

import msgspec
from rich.console import Console
from rich.table import Table
from rich.text import Text

from engine.plan import Plan
from engine.report import ExecutionRow, Report
from engine.scenario import show_value
from simulator import analysis
from simulator.analysis import Bound, Link
from simulator.sim import Outcome

OUTCOME_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "skipped": "dim", None: "blue"}


class StepJson(msgspec.Struct):
    name: str
    outcome: str | None
    start: float | None
    end: float | None


class LinkJson(msgspec.Struct):
    kind: str
    start: float
    end: float
    duration: float
    cause: str
    step: str | None
    target: str | None
    attempt: int | None


class ReportJson(msgspec.Struct):
    makespan: float | None
    sequential_makespan: float | None
    savings: float | None
    outcome: str | None
    steps: list[StepJson]
    executions: list[ExecutionRow]
    deployment: str | None = None
    seed: int | None = None
    lower_bound: Bound | None = None
    bounds: list[Bound] | None = None
    critical_path: list[LinkJson] | None = None


def report_json(
    r: Report,
    sequential: float | None = None,
    savings: float | None = None,
    seed: int | None = None,
    analysis: Analysis | None = None,
) -> bytes:
    """The JSON of `simulate --format json` for a report (simulated or recorded), with its analysis."""
    doc = ReportJson(
        makespan=r.makespan,
        sequential_makespan=sequential,
        savings=savings,
        outcome=r.outcome,
        steps=[StepJson(name=s.name, outcome=s.outcome, start=s.start, end=s.end) for s in r.steps.values()],
        executions=r.executions(),
        deployment=r.deployment,
        seed=seed,
    )
    if analysis is not None:
        doc.lower_bound = analysis.bound
        doc.bounds = analysis.bounds
        doc.critical_path = [
            LinkJson(x.kind, x.start, x.end, round(x.duration, 9), x.cause, x.step, x.target, x.attempt) for x in analysis.path
        ]
    return msgspec.json.encode(doc)


class Analysis(msgspec.Struct):
    bound: Bound
    bounds: list[Bound]
    path: list[Link]


def analyse(plan: Plan, r: Report) -> Analysis:
    return Analysis(*analysis.analyse(plan, r))


def simulation_json(result: Outcome, seed: int, plan: Plan) -> bytes:
    return report_json(result.report, result.sequential_makespan, result.savings, seed, analyse(plan, result.report))


def styled(outcome: str | None) -> Text:
    return Text(outcome or "-", style=OUTCOME_STYLE.get(outcome, ""))


def seconds(t: float | None) -> str:
    """90 -> '1m30s'; 3.25 -> '3.25s'; 661.29 -> '11m1.3s'; None -> '-'."""
    if t is None:
        return "-"
    if t < 0:
        return "-" + seconds(-t)
    if t < 60:
        return f"{round(t, 3):g}s"
    t = round(t, 1)
    whole = int(t)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    sec = round(s + (t - whole), 1)
    return (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{sec:g}s" if sec else "")


def simulation_table(result: Outcome, plan: Plan, seed: int, console: Console | None = None) -> None:
    console = console or Console()
    report_table(result.report, title=plan.name or plan.source, sequential=result.sequential_makespan, seed=seed, console=console)
    analysis_table(analyse(plan, result.report), result.report.makespan or 0.0, console)


def analysis_table(a: Analysis, makespan: float, console: Console, limit: int = 30) -> None:
    """The lower bound and the critical path, for people."""
    console.print()
    ratio = f", the makespan is {makespan / a.bound.value:.2f}× that" if a.bound.value > 0 else ""
    console.print(Text.assemble(("lower bound ", "bold"), f"{seconds(a.bound.value)} ({a.bound.kind}: {a.bound.detail}){ratio}"))  # Text: names are never markup
    links = [x for x in a.path if x.duration > 1e-9 or x.kind == "execution"]
    console.print(Text("critical path", style="bold"))
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(justify="right", style="dim")
    table.add_column(justify="right")
    table.add_column()
    table.add_column(style="dim")
    shown = links if len(links) <= limit else links[: limit // 2] + links[-limit // 2 :]
    for i, x in enumerate(shown):
        if len(links) > limit and i == limit // 2:
            table.add_row("…", "", f"({len(links) - limit} more links)", "")
        what = f"{x.step} @ {x.target or 'server'} #{x.attempt}" if x.kind == "execution" else f"wait: {x.cause}"
        table.add_row(seconds(x.start), seconds(x.duration), Text(what), Text(x.cause) if x.kind == "execution" else "")
    console.print(table)


def report_table(
    r: Report,
    title: str | None = None,
    sequential: float | None = None,
    seed: int | None = None,
    console: Console | None = None,
) -> None:
    """Summary lines, then one row per step with a timeline."""
    console = console or Console()
    makespan = r.makespan
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    if r.deployment and seed is None:
        summary.add_row("deployment", Text(r.deployment))
    summary.add_row("scenario", Text(title or r.scenario or "scenario"))
    summary.add_row("outcome", styled(r.outcome) if r.outcome else Text("running (or interrupted)", style="blue"))
    summary.add_row("makespan", seconds(makespan))
    if sequential is not None and makespan is not None:
        summary.add_row("sequential", seconds(sequential))
        saved = round(sequential - makespan, 9)
        pct = (100.0 * saved / sequential) if sequential else 0.0
        summary.add_row("savings", f"{seconds(saved)} ({pct:.1f}%)")
    summary.add_row("executions", f"{r.execution_count:,} attempts" + (f", seed {seed}" if seed is not None else ""))
    console.print(summary)
    console.print()
    total = makespan if makespan is not None else max((row.end or row.start for row in r.rows), default=0.0)
    console.print(step_table(r, total, width=max(20, min(60, console.width - 60))))


def step_table(r: Report, makespan: float, width: int) -> Table:
    """One row per step: outcome, start, end, and a bar on a shared time axis: `█` while
    some execution of the step runs, `░` while the step is active but waits (for locks,
    resources, its window or a retry delay)."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("step", overflow="fold")
    table.add_column("outcome")
    table.add_column("start", justify="right")
    table.add_column("end", justify="right")
    table.add_column(f"timeline 0 … {seconds(makespan)}", no_wrap=True)
    busy = _busy_cells(r, makespan, width)
    for s in r.steps.values():
        style = OUTCOME_STYLE.get(s.outcome, "")
        cells = busy.get(s.name)
        table.add_row(
            Text(s.name),
            Text(s.outcome or "-", style=style),
            seconds(s.start),
            seconds(s.end),
            bar(s.start, s.end, makespan, width, style, cells),
        )
    return table


def _cell_span(start: float, end: float, total: float, width: int) -> tuple[int, int]:
    a = min(width - 1, int(start / total * width))
    b = max(a + 1, min(width, round(end / total * width)))
    return a, b


def _busy_cells(r: Report, total: float, width: int) -> dict[str, bytearray]:
    """Per step, which timeline cells have an execution running."""
    out: dict[str, bytearray] = {}
    if total <= 0:
        return out
    for row in r.rows:
        step, start, end = row.step, row.start, row.end
        cells = out.get(step)
        if cells is None:
            cells = out[step] = bytearray(width)
        a, b = _cell_span(start, end if end is not None else total, total, width)
        cells[a:b] = b"\x01" * (b - a)
    return out


def bar(start: float | None, end: float | None, total: float, width: int, style: str, busy: bytearray | None = None) -> Text:
    if start is None or end is None or total <= 0:
        return Text("·" * width, style="dim")
    a, b = _cell_span(start, end, total, width)
    text = Text("·" * a, style="dim")
    for i in range(a, b):
        text.append("█" if busy is None or busy[i] else "░", style=style)
    text.append("·" * (width - b), style="dim")
    return text


def with_status(message: str, work, enabled: bool = True):  # noqa: ANN001, ANN201
    """Run `work()` under a spinner on stderr (a terminal only)."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        return work()
    with console.status(message):
        return work()


def grid_size(axes) -> int:  # noqa: ANN001
    n = 1
    for a in axes:
        n *= len(a.values)
    return n


def whatif_table(rows, axes, runs: int | None, console: Console | None = None) -> None:  # noqa: ANN001
    """One row per combination; the best one marked ★, anomalies flagged ⚠."""
    console = console or Console()
    measure = (lambda r: r.p50) if runs else (lambda r: r.makespan)
    best = min(range(len(rows)), key=lambda i: (measure(rows[i]), i)) if rows else None
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("")
    for a in axes:
        table.add_column(Text(a.key), overflow="fold")
    table.add_column("makespan", justify="right")
    if runs:
        for col in ("p50", "p90", "p95", "max"):
            table.add_column(col, justify="right")
    table.add_column("saved", justify="right")
    table.add_column("vs written", justify="right")
    table.add_column("")
    for i, r in enumerate(rows):
        cells: list = ["★" if i == best else ""]
        cells += [Text(show_value(r.settings[a.key])) for a in axes]
        cells.append(seconds(r.makespan))
        if runs:
            cells += [seconds(r.p50), seconds(r.p90), seconds(r.p95), seconds(r.max)]
        pct = 100 * r.savings / r.sequential_makespan if r.sequential_makespan else 0.0
        cells += [f"{pct:.0f}%", _signed(r.savings_vs_written)]
        cells.append(Text(f"⚠ {r.anomaly}", style="yellow") if r.anomaly else Text(""))  # names the setting: Text
        table.add_row(*cells, style="bold" if i == best else None)
    console.print(table)
    console.print(
        Text("saved: against the same process run one step after another; vs written: - faster, + slower than the scenario as written", style="dim")
    )
    if any(r.anomaly for r in rows):
        console.print(
            Text("⚠ more parallelism made these rows slower: greedy schedules have anomalies; simulate before you change.", style="yellow")
        )


def _signed(t: float) -> str:
    if abs(t) < 1e-9:
        return "±0s"
    return ("-" if t > 0 else "+") + seconds(abs(t))


def advice_table(advice, top: int, console: Console | None = None, scenario: str = "SCENARIO", seed: int = 0) -> None:  # noqa: ANN001
    """The changes that save time, each with the command that tries it (it runs as
    printed when pasted into a shell), the best combination, and what was assumed."""
    console = console or Console()
    console.print(Text.assemble(("as written ", "bold"), f"{seconds(advice.makespan)}   lower bound {seconds(advice.lower_bound.value)} ({advice.lower_bound.kind}: {advice.lower_bound.detail})"))
    console.print()
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("saved", justify="right")
    table.add_column("makespan", justify="right")
    table.add_column("change")
    table.add_column("assumes", style="dim")
    helpful = [c for c in advice.changes if c.saved > 1e-9][:top]
    reordering = any(c.reorders for c in helpful)
    if reordering:
        table.add_column("reorders", style="yellow")
    for n, c in enumerate(helpful, 1):
        row = [str(n), seconds(c.saved), seconds(c.makespan), Text(c.change), Text(c.assumption)]
        if reordering:
            row.append(Text(reorder_text(c.reorders)))
        table.add_row(*row)
    if helpful:
        console.print(table)
        console.print(Text("to try one (the same seed, the same durations):", style="dim"))
        for n, c in enumerate(helpful, 1):
            console.print(Text(f"  {n}. {try_command(scenario, c.settings, seed)}"), soft_wrap=True)
    else:
        console.print("no single change makes this deployment faster")
    rest = len(advice.changes) - len(helpful)
    if rest:
        console.print(Text(f"{_count(rest, 'other change')} tried saved nothing (or cost time); --format json lists them all", style="dim"))
    if advice.withheld:
        console.print(
            Text(
                f"{_count(advice.withheld, 'change')} that would change the order of steps on a target not offered; "
                "--allow-reorder shows them, with the targets and steps they reorder",
                style="dim",
            )
        )
    if advice.best:
        console.print()
        console.print(Text("best combination found", style="bold"))
        for c in advice.best:
            console.print(Text(f"  • {c.change}"))
        gap = advice.best_makespan / advice.best_lower_bound.value if advice.best_lower_bound.value else 1.0
        console.print(
            f"  makespan {seconds(advice.best_makespan)} (saves {seconds(advice.makespan - advice.best_makespan)}), "
            f"lower bound {seconds(advice.best_lower_bound.value)}: {gap:.2f}× the bound"
        )
        if advice.best_reorders:
            console.print(Text(f"  reorders: {reorder_text(advice.best_reorders)}", style="yellow"))
        settings: dict = {}
        for c in advice.best:
            settings.update(c.settings)
        console.print(Text(f"  try it: {try_command(scenario, settings, seed)}"), soft_wrap=True)
    console.print()
    console.print(Text(f"⚠ {advice.warning}", style="yellow"))


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def try_command(scenario: str, settings: dict, seed: int = 0) -> str:
    """`abreast simulate SCENARIO --set 'KEY=VALUE' ...`, quoted for a POSIX shell."""
    import shlex

    parts = ["abreast", "simulate", shlex.quote(scenario)]
    for k, v in settings.items():
        parts += ["--set", shlex.quote(f"{k}={show_value(v)}")]
    if seed:
        parts += ["--seed", str(seed)]
    return " ".join(parts)


def reorder_text(reorders, shown: int = 3) -> str:  # noqa: ANN001
    """`'upgrade web' before 'push package' on web-01, web-02, web-03; …`"""
    parts = []
    for r in reorders:
        names = ["the server" if t is None else t for t in r.targets]
        where = ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
        parts.append(f"{r.first!r} before {r.then!r} on {where}")
    return "; ".join(parts)
