"""The HTML report: one self-contained page drawn from plain data (SPEC §7).

`build(page)` turns a `Page` into the text of one HTML file: no request to the network
when it is opened (a Content-Security-Policy forbids them), the summary readable
without scripts, and two timelines drawn as inline SVG — by step (each step's
executions stacked, one row per execution) and by target (a lane per target). Every
attempt is a bar coloured by its outcome; the waits before it are shaded by cause; the
critical path is outlined and drawn again on its own strip; a small script zooms and
pans the time axis, shows a tooltip and, for a stored deployment, an attempt's output.

The by-step timeline is where attempts live: each is ONE `<rect class="a">` carrying
`data-step`, `data-target` (empty for a server step), `data-attempt`, `data-start` and
`data-end` (seconds, exactly as in the events), `data-outcome` and `data-exit`. The
by-target lanes and the critical-path strip draw the same attempts again as
`<rect data-ref="N">`, N the index of that attempt among the page's `rect.a`, and never
repeat the data-* attributes. With what-if rows each arrangement is its own
`<section class="arrangement" data-arrangement="...">`, holding its own attempts once.

Why SVG rather than a canvas or a chart library: the attempts are elements a script or
a test can find, the page draws without JavaScript, and zooming the time axis is one
`viewBox` change per timeline (x in seconds, y in rows, `preserveAspectRatio="none"`),
which Chromium redraws quickly with 10,000 attempts; nothing to embed, so the page stays
small. Labels and the axis sit outside the stretched SVG, so no text is distorted.

Any source feeds it: `arrangement_of(plan, events, ...)` folds an event log (simulated,
stored, imported or replayed) into an `Arrangement`.
"""

from __future__ import annotations

import html
import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

import msgspec

from abreast.render import seconds
from engine.events import Event, ExecutionFinished
from engine.plan import Plan, fan_out
from engine.report import Report
from simulator import analysis
from simulator.analysis import Bound, Link, Wait

OUTCOMES = ("succeeded", "failed", "timed_out", "cancelled", "interrupted", "running")
LABEL_WIDTH = 230  # px: the label column of every timeline (the plots share one width)
OUTPUT_LINES = 20  # the last lines of an attempt's output kept in the page
OUTPUT_LINE_CHARS = 400


class Attempt(msgspec.Struct):
    step: str
    target: str | None
    attempt: int
    start: float
    end: float | None  # None: still running (or its orchestrator died)
    outcome: str | None
    exit_code: int | None = None
    error: str | None = None


class StepSpan(msgspec.Struct):
    name: str
    outcome: str | None  # succeeded, failed, cancelled, skipped; None: not finished
    start: float | None
    end: float | None


class Arrangement(msgspec.Struct):
    """One deployment's timeline: as it ran, or simulated under some settings."""

    label: str
    outcome: str | None
    makespan: float | None
    steps: list[StepSpan]
    attempts: list[Attempt]
    waits: list[Wait]
    lower_bound: Bound | None = None
    critical_path: list[Link] = []
    sequential_makespan: float | None = None
    settings: dict[str, Any] = {}
    note: str | None = None  # e.g. why the sequential makespan is not known


class WhatIfRow(msgspec.Struct):
    """A row of a what-if grid, with its own timeline."""

    settings: dict[str, Any]
    arrangement: Arrangement
    savings_vs_reference: float  # + faster than the page's main arrangement
    anomaly: str | None = None
    estimated: int = 0  # a replayed row: attempts the record had no duration for


class Page(msgspec.Struct):
    plan: Plan
    main: Arrangement
    source: str  # how the page came to be, in words
    title: str | None = None
    deployment: str | None = None
    seed: int | None = None
    # (step, target, attempt) -> the last lines of its output; None: none was recorded
    # (a simulation). An empty dict: a stored deployment whose attempts printed nothing.
    outputs: dict[tuple[str, str | None, int], list[str]] | None = None
    rows: list[WhatIfRow] = []
    axes: list[str] = []  # the --set keys of the rows, in order


def arrangement_of(
    plan: Plan,
    events: Iterable[Event],
    label: str,
    sequential_makespan: float | None = None,
    settings: dict[str, Any] | None = None,
    note: str | None = None,
) -> Arrangement:
    """Fold an event log into what the page draws: attempts with their exit codes and
    errors, step spans, waits with causes, the lower bound and the critical path."""
    report = Report()
    finished: dict[tuple[str, str | None, int], ExecutionFinished] = {}
    batch: list[Event] = []
    for ev in events:
        batch.append(ev)
        if type(ev) is ExecutionFinished:
            finished[(ev.step, ev.target, ev.attempt)] = ev
    report.extend(batch)
    attempts = []
    for r in report.rows:
        f = finished.get((r.step, r.target, r.attempt))
        attempts.append(
            Attempt(r.step, r.target, r.attempt, r.start, r.end, r.outcome, f.exit_code if f else None, f.error if f else None)
        )
    bound: Bound | None = None
    path: list[Link] = []
    if report.rows or report.makespan is not None:
        bound, _, path = analysis.analyse(plan, report)
    return Arrangement(
        label=label,
        outcome=report.outcome,
        makespan=report.makespan,
        steps=[StepSpan(s.name, s.outcome, s.start, s.end) for s in report.steps.values()],
        attempts=attempts,
        waits=analysis.waits(plan, report),
        lower_bound=bound,
        critical_path=path,
        sequential_makespan=sequential_makespan,
        settings=dict(settings or {}),
        note=note,
    )


def tail(lines: Sequence[str]) -> list[str]:
    """The last lines of an output, each cut to a readable length."""
    return [line if len(line) <= OUTPUT_LINE_CHARS else line[:OUTPUT_LINE_CHARS] + "…" for line in lines[-OUTPUT_LINES:]]


# --- the page ------------------------------------------------------------------------------


def build(page: Page) -> str:
    """The whole HTML page, as text."""
    span = _span(page)
    out = _Out()
    main = page.main
    title = page.title or page.plan.name or "deployment"
    head, foot = _asset("page.html").replace("<!--TITLE-->", _e(f"abreast report: {title}")).split("<!--BODY-->")
    out.add(head)
    out.add(f'<body data-span="{_num(span)}">')
    out.add(f"<header><h1>{_e(title)}</h1><p class=sub>{_e(page.source)}</p></header>")
    out.add(_summary(page))
    if page.rows:
        out.add(_whatif(page))
    ctx = _Ctx(span)
    legend = _legend([page.main, *(r.arrangement for r in page.rows)])
    out.add(_controls(legend))
    out.add('<section class="arrangement" data-arrangement="main">')
    if page.rows:
        out.add(f"<h2>{_e(main.label)}</h2>")
    _timelines(out, page.plan, main, ctx, by_target=True)
    out.add(_path_table(main))
    out.add("</section>")
    for i, row in enumerate(page.rows):
        a = row.arrangement
        settings_json = msgspec.json.encode(row.settings).decode()
        out.add(f'<section class="arrangement" data-arrangement="{i}" data-settings="{_e(settings_json)}">')
        star = " ★" if i == _best(page) else ""
        out.add(f"<h2>{_e(a.label)}{star} <small>makespan {_e(seconds(a.makespan))}</small></h2>")
        _timelines(out, page.plan, a, ctx, by_target=False)
        out.add("</section>")
    out.add('<div id="tip" role="tooltip" hidden></div>')
    out.add('<aside id="detail" hidden><button type="button" class="close" title="close">×</button><div class="body"></div></aside>')
    out.add('<script type="application/json" id="causes">')
    out.add(_json_for_script(list(ctx.causes)))
    out.add("</script>")
    if page.outputs is not None:
        out.add('<script type="application/json" id="outputs">')
        out.add(_json_for_script(_outputs_by_index(page)))
        out.add("</script>")
    out.add("<script>" + _asset("page.js") + "</script>")
    out.add("</body>")
    out.add(foot)
    return out.text()


def _asset(name: str) -> str:
    text = (resources.files("abreast") / "page" / name).read_text(encoding="utf-8")
    if name == "page.html":
        return text.replace("/*CSS*/", _asset("page.css"))
    return text


class _Out:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, s: str) -> None:
        self.parts.append(s)

    def text(self) -> str:
        return "\n".join(self.parts)


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _num(t: float) -> str:
    """A coordinate: short (a tenth of a millisecond is plenty to draw with)."""
    r = round(t, 4)
    return str(int(r)) if r == int(r) else repr(r)


def _exact(t: float | None) -> str:
    """A time in a data-* attribute: exactly the float of the event (repr round-trips)."""
    return "" if t is None else repr(float(t))


def _span(page: Page) -> float:
    """The time every timeline of the page shows when zoomed out: the longest makespan
    and a little room after it, so its last bar and the makespan line show whole."""
    end = max(_end_of(a) for a in [page.main, *(r.arrangement for r in page.rows)])
    return end * 1.02 if end > 0 else 1.0


def _end_of(a: Arrangement) -> float:
    if a.makespan is not None:
        return a.makespan
    return max([0.0, *(x.end if x.end is not None else x.start for x in a.attempts), *(w.end for w in a.waits)])


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "0%"


def _summary(page: Page) -> str:
    a = page.main
    rows: list[tuple[str, str]] = []
    rows.append(("scenario", _e(page.plan.name or (page.title or "-"))))
    if page.deployment:
        rows.append(("deployment", _e(page.deployment)))
    rows.append(("outcome", f'<span class="o o-{_e(a.outcome or "running")}">{_e(a.outcome or "not finished")}</span>'))
    rows.append(("makespan", _e(seconds(a.makespan))))
    if a.sequential_makespan is not None and a.makespan is not None:
        saved = round(a.sequential_makespan - a.makespan, 9)
        rows.append(("sequential makespan", _e(seconds(a.sequential_makespan))))
        rows.append(("savings", _e(f"{seconds(saved)} ({_pct(saved, a.sequential_makespan)})")))
    else:
        why = a.note or "not known"
        rows.append(("sequential makespan", f'- <span class="dim">({_e(why)})</span>'))
        rows.append(("savings", "-"))
    if a.lower_bound is not None:
        b = a.lower_bound
        ratio = f", the makespan is {a.makespan / b.value:.2f}× that" if b.value > 0 and a.makespan is not None else ""
        rows.append(("lower bound", _e(f"{seconds(b.value)} — {b.kind} bound ({b.detail}){ratio}")))
    retried = sum(1 for x in a.attempts if x.attempt > 1)
    what = f"{len(a.attempts):,} attempts" + (f" ({retried:,} of them retries)" if retried else "")
    if page.seed is not None:
        what += f", seed {page.seed}"
    rows.append(("executions", _e(what)))
    waited: dict[str, float] = {}
    for w in a.waits:
        waited[w.kind] = waited.get(w.kind, 0.0) + (w.end - w.start)
    if waited:
        parts = [f"{k} {seconds(v)}" for k, v in sorted(waited.items(), key=lambda kv: -kv[1])]
        rows.append(("time spent waiting", _e(", ".join(parts) + " (summed over executions)")))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<section id="summary"><table class="summary">{body}</table></section>'


def _best(page: Page) -> int | None:
    rows = page.rows
    if not rows:
        return None
    return min(range(len(rows)), key=lambda i: (rows[i].arrangement.makespan if rows[i].arrangement.makespan is not None else math.inf, i))


def _whatif(page: Page) -> str:
    """The rows as a small chart (a bar per row, the best marked) and a table."""
    rows = page.rows
    best = _best(page)
    longest = max((r.arrangement.makespan or 0.0 for r in rows), default=0.0) or 1.0
    ref = page.main.makespan
    labels = [", ".join(f"{k}={v}" for k, v in r.settings.items()) for r in rows]
    bar_h, gap, width = 18, 6, 1000
    label_w = min(560, 24 + 7 * max(len(x) for x in labels))  # about 7 px a character at 12 px
    h = len(rows) * (bar_h + gap) + gap + 18
    svg = [f'<svg class="chart" viewBox="0 0 {width} {h}" width="{width}" height="{h}" role="img" aria-label="makespan of each row">']
    plot_w = width - label_w - 80
    for i, r in enumerate(rows):
        m = r.arrangement.makespan or 0.0
        y = gap + i * (bar_h + gap)
        w = plot_w * m / longest
        label = labels[i]
        cls = "bar best" if i == best else "bar"
        svg.append(f'<text x="{label_w - 8}" y="{y + bar_h - 5}" text-anchor="end">{_e(("★ " if i == best else "") + label)}</text>')
        svg.append(f'<rect class="{cls}" x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}"><title>{_e(label)}: {_e(seconds(m))}</title></rect>')
        svg.append(f'<text x="{label_w + w + 6:.1f}" y="{y + bar_h - 5}">{_e(seconds(m))}</text>')
    if ref:
        x = label_w + plot_w * ref / longest
        svg.append(f'<line class="ref" x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{h - 16}"/>')
        svg.append(f'<text class="dim" x="{x:.1f}" y="{h - 4}" text-anchor="middle">{_e(page.main.label)} {_e(seconds(ref))}</text>')
    svg.append("</svg>")
    head = "".join(f"<th>{_e(k)}</th>" for k in page.axes)
    table = [
        '<table class="whatif"><thead><tr><th></th>' + head + "<th>makespan</th><th>sequential</th><th>saved</th>"
        f"<th>vs {_e(page.main.label)}</th><th>lower bound</th><th>outcome</th><th></th></tr></thead><tbody>"
    ]
    for i, r in enumerate(rows):
        a = r.arrangement
        seq = a.sequential_makespan
        saved = f"{_pct(seq - a.makespan, seq)}" if seq is not None and a.makespan is not None else "-"
        vs = r.savings_vs_reference
        vs_text = "±0s" if abs(vs) < 1e-9 else ("-" if vs > 0 else "+") + seconds(abs(vs))
        cells = "".join(f"<td>{_e(r.settings.get(k))}</td>" for k in page.axes)
        cls = ' class="best"' if i == best else ""
        table.append(
            f"<tr{cls}><td>{'★' if i == best else ''}</td>{cells}<td>{_e(seconds(a.makespan))}</td><td>{_e(seconds(seq))}</td>"
            f"<td>{saved}</td><td>{_e(vs_text)}</td><td>{_e(seconds(a.lower_bound.value) if a.lower_bound else '-')}</td>"
            f'<td><span class="o o-{_e(a.outcome)}">{_e(a.outcome)}</span></td><td class="warn">{_e(_row_warning(r))}</td></tr>'
        )
    table.append("</tbody></table>")
    note = (
        f'<p class="dim">★ the fastest row. saved: against the same process run one step after another; '
        f"vs {_e(page.main.label)}: - faster, + slower. "
        + (
            "Every row sees the same sampled durations.</p>"
            if page.seed is not None
            else "Every row replays the recorded durations and outcomes; an attempt the record has no time for is estimated.</p>"
        )
    )
    return '<section id="whatif"><h2>What if</h2>' + "".join(svg) + "".join(table) + note + "</section>"


def _row_warning(r: WhatIfRow) -> str:
    parts = ["⚠ " + r.anomaly] if r.anomaly else []
    if r.estimated:
        parts.append(f"≈ {r.estimated} attempt{'s' if r.estimated != 1 else ''} estimated (no recorded duration)")
    return "; ".join(parts)


def _legend(arrangements: list[Arrangement]) -> str:
    outcomes = {x.outcome or "running" for a in arrangements for x in a.attempts}
    kinds = {w.kind for a in arrangements for w in a.waits}
    items = [f'<span class="key"><i class="sw o-{o}"></i>{o.replace("_", " ")}</span>' for o in OUTCOMES if o in outcomes]
    items += [f'<span class="key"><i class="sw w k-{_kind_class(k)}"></i>waited: {k}</span>' for k in analysis.WAIT_KINDS if k in kinds]
    items.append('<span class="key"><i class="sw cpk"></i>critical path</span>')
    items.append('<span class="key"><i class="sw mk"></i>makespan</span><span class="key"><i class="sw lb"></i>lower bound</span>')
    return "".join(items)


def _controls(legend: str) -> str:
    return (
        '<div id="controls"><div class="legend">' + legend + "</div>"
        '<div class="zoom" hidden><button type="button" data-zoom="in" title="zoom in (+)">+</button>'
        '<button type="button" data-zoom="out" title="zoom out (-)">−</button>'
        '<button type="button" data-zoom="fit" title="show everything (0)">fit</button>'
        '<span class="range"></span><span class="hint">drag to pan · ctrl+wheel or wheel over the axis to zoom · shift+wheel to pan</span></div></div>'
    )


def _kind_class(kind: str) -> str:
    return kind.replace(" ", "-")


def _row_height(rows: int) -> int:
    """Rows stay readable up to a few hundred; beyond, they thin out to 3 px."""
    if rows <= 300:
        return FULL_ROW
    return max(3, 4800 // rows)


def _outcome_class(outcome: str | None) -> str:
    return f"o-{outcome or 'running'}"


CHUNK = 200  # rows per <svg class="plot">: zooming redraws only the chunks in view
FULL_ROW = 16  # px: a row's height up to a few hundred rows (and always the critical path's)


class _Ctx:
    """What every timeline of one page shares: the time span, the causes of waits (kept
    once, in a table the waits point into) and how many attempts are drawn so far."""

    def __init__(self, span: float):
        self.span = span
        self.causes: dict[str, int] = {}
        self.drawn = 0

    def cause(self, text: str) -> int:
        return self.causes.setdefault(text, len(self.causes))


class _Rows:
    """A timeline being drawn: a label and the SVG elements of each row. Elements are
    placed in their chunk's coordinates (`y`): x in seconds, y in rows from the chunk's
    top. The first `lead` rows form a chunk of their own."""

    def __init__(self, lead: int = 0) -> None:
        self.lead = lead
        self.labels: list[tuple[int, str, str, str | None]] = []  # (row, text, kind, extra)
        self.elements: list[list[str]] = []
        self.bands: list[tuple[int, int]] = []  # (first row, rows): shaded groups

    def new(self) -> int:
        self.elements.append([])
        return len(self.elements) - 1

    def add(self, r: int, element: str) -> None:
        self.elements[r].append(element)

    def y(self, r: int) -> int:
        return r if r < self.lead else (r - self.lead) % CHUNK


def _timelines(out: _Out, plan: Plan, a: Arrangement, ctx: _Ctx, by_target: bool) -> None:
    """The by-step timeline (where the attempts live) and, if asked, the by-target one."""
    index = {(x.step, x.target, x.attempt): ctx.drawn + i for i, x in enumerate(a.attempts)}
    ctx.drawn += len(a.attempts)
    on_path = {(x.step, x.target, x.attempt) for x in a.critical_path if x.kind == "execution"}
    _emit(out, "steps", "By step", _by_step(plan, a, ctx, index, on_path), ctx, a)
    if by_target:
        _emit(out, "targets", "By target", _by_target(plan, a, ctx, index, on_path), ctx, a)


def _emit(out: _Out, view: str, title: str, tl: _Rows, ctx: _Ctx, a: Arrangement) -> None:
    """A timeline: its axis, labels, grid lines and marks, and its rows in chunks (the
    leading rows — the critical path — in a chunk of their own, always full height)."""
    span = ctx.span
    rows = max(1, len(tl.elements))
    row_h = _row_height(rows - tl.lead)
    chunks = [(c, min(CHUNK, rows - c)) for c in range(tl.lead, rows, CHUNK)]
    if tl.lead:
        chunks.insert(0, (0, tl.lead))

    def top(r: int) -> int:
        return r * FULL_ROW if r < tl.lead else tl.lead * FULL_ROW + (r - tl.lead) * row_h

    height = top(rows)
    out.add(f'<div class="tl" data-view="{view}" data-rows="{rows}"><h3>{_e(title)}</h3>')
    out.add(f'<div class="axis"><div class="gutter"></div><div class="ticks">{_ticks_html(span)}</div></div>')
    out.add(f'<div class="scroll" style="max-height:{min(height, 620) + 2}px"><div class="rows" style="height:{height}px">')
    marks = []
    if a.makespan is not None:
        marks.append(f'<div class="mark mk" data-t="{_num(a.makespan)}" style="left:{100 * a.makespan / span:.4f}%"></div>')
    if a.lower_bound is not None and a.lower_bound.value > 0:
        b = a.lower_bound.value
        marks.append(f'<div class="mark lb" data-t="{_num(b)}" style="left:{100 * b / span:.4f}%"></div>')
    out.add(f'<div class="grid">{_grid_html(span)}{"".join(marks)}</div>')
    out.add(_labels(tl, top, row_h, height))
    out.add('<div class="plots">')
    for c0, n in chunks:
        h = FULL_ROW if c0 < tl.lead else row_h
        out.add(f'<svg class="plot" viewBox="0 0 {_num(span)} {n}" preserveAspectRatio="none" height="{n * h}">')
        for b0, bn in tl.bands:
            lo, hi = max(b0, c0), min(b0 + bn, c0 + n)
            if lo < hi:
                out.add(f'<rect class="band" x="-1e9" y="{lo - c0}" width="2e9" height="{hi - lo}"/>')
        out.add("\n".join(e for row in tl.elements[c0 : c0 + n] for e in row))
        out.add("</svg>")
    out.add("</div></div></div></div>")


def _labels(tl: _Rows, top, row_h: int, height: int) -> str:  # noqa: ANN001 - top: row -> px
    """The label column. On thin rows not every row can have one: step names (and the
    critical path's) always show, a target's where it has room."""
    out = [f'<svg class="labels" width="{LABEL_WIDTH}" height="{height}">']
    placed = sorted(top(r) for r, _, kind, _ in tl.labels if kind in ("step", "path"))
    last = -100
    for r, text, kind, extra in tl.labels:
        y = top(r)
        h = FULL_ROW if r < tl.lead else row_h
        if h < 9 and kind not in ("step", "path"):
            i = bisect_left(placed, y)
            near = (i < len(placed) and placed[i] - y < 11) or (i > 0 and y - placed[i - 1] < 11)
            if near or y < last + 11:
                continue
        out.append(_label(y, h, text, kind, extra))
        last = y
    out.append("</svg>")
    return "".join(out)


def _nice_ticks(span: float, count: int = 8) -> list[float]:
    """Round tick values (1, 2, 5 × 10^k seconds, or whole minutes and hours) across [0, span]."""
    raw = span / max(1, count)
    candidates = [1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400]
    step = next((c for c in candidates if c >= raw), None)
    if step is None:
        step = 86400 * math.ceil(raw / 86400)
    return [i * step for i in range(int(span / step) + 1)]


def _ticks_html(span: float) -> str:
    return "".join(f'<span style="left:{100 * t / span:.4f}%">{_e(seconds(t))}</span>' for t in _nice_ticks(span))


def _grid_html(span: float) -> str:
    return "".join(f'<i style="left:{100 * t / span:.4f}%"></i>' for t in _nice_ticks(span))


def _attempt_rect(x: Attempt, y: int, cp: bool, until: float) -> str:
    """The attempt's one element; one that never finished is drawn up to `until`."""
    end = x.end
    w = (end if end is not None else max(until, x.start)) - x.start
    cls = f"a {_outcome_class(x.outcome)}" + (" cp" if cp else "") + (" zero" if end is not None and w <= 0 else "")
    exit_code = "" if x.exit_code is None else str(x.exit_code)
    error = f' data-error="{_e(x.error)}"' if x.error else ""
    return (
        f'<rect class="{cls}" x="{_num(x.start)}" y="{y}.12" width="{_num(w)}" '
        f'data-step="{_e(x.step)}" data-target="{_e(x.target or "")}" data-attempt="{x.attempt}" '
        f'data-start="{_exact(x.start)}" data-end="{_exact(end)}" data-outcome="{_e(x.outcome or "running")}" '
        f'data-exit="{exit_code}"{error}/>'
    )


def _wait_rect(w: Wait, y: str, ctx: _Ctx, on_lane: bool = False) -> str:
    lane = " t" if on_lane else ""
    return (
        f'<rect class="w k-{_kind_class(w.kind)}{lane}" x="{_num(w.start)}" y="{y}" width="{_num(w.end - w.start)}" '
        f'data-c="{ctx.cause(w.cause)}"/>'
    )


def _by_step(plan: Plan, a: Arrangement, ctx: _Ctx, index: dict, on_path: set) -> _Rows:
    """The critical path on a strip of its own, then per step a header row and a row per
    execution (a server step: its one execution on the header row). Executions of a step
    that never ran get no rows."""
    by_exec: dict[tuple[str, str | None], list[Attempt]] = {}
    for x in a.attempts:
        by_exec.setdefault((x.step, x.target), []).append(x)
    waits_by_exec: dict[tuple[str, str | None], list[Wait]] = {}
    for w in a.waits:
        waits_by_exec.setdefault((w.step, w.target), []).append(w)
    spans = {s.name: s for s in a.steps}
    until = _end_of(a)
    tl = _Rows(lead=1)
    r = tl.new()
    tl.labels.append((r, "critical path", "path", None))
    _path_strip(tl, r, a, index, ctx)

    def execution(r: int, step: str, target: str | None) -> None:
        for w in waits_by_exec.get((step, target), ()):
            tl.add(r, _wait_rect(w, f"{tl.y(r)}.3", ctx))
        for x in by_exec.get((step, target), ()):
            key = (x.step, x.target, x.attempt)
            tl.add(r, _attempt_rect(x, tl.y(r), key in on_path, until))

    for step, targets in _executions(plan, a):
        s = spans.get(step)
        outcome = (s.outcome if s is not None else None) or "not run"
        ran = s is not None and s.start is not None
        first = r = tl.new()
        tl.labels.append((r, step, "step", outcome))
        if ran and targets == [None]:
            execution(r, step, None)  # a server step: its one execution on its own row
        else:
            if ran and s is not None and s.start is not None:
                end = s.end if s.end is not None else _end_of(a)
                tl.add(r, f'<rect class="span {_outcome_class(s.outcome)}" x="{_num(s.start)}" y="{tl.y(r)}.3" width="{_num(end - s.start)}"/>')
                for t in targets:
                    r = tl.new()
                    tl.labels.append((r, t or "server", "exec", None))
                    execution(r, step, t)
        tl.bands.append((first, r - first + 1))
    tl.bands = tl.bands[::2]  # every other step group is shaded
    return tl


def _by_target(plan: Plan, a: Arrangement, ctx: _Ctx, index: dict, on_path: set) -> _Rows:
    """A lane per target (and one for server steps); attempts that overlap on a target
    (shared isolation, server steps) take sub-lanes. The waits of a target's
    executions shade the bottom of its lane."""
    order = [t.name for t in plan.targets]
    lanes: dict[str | None, list[Attempt]] = {}
    for x in a.attempts:
        lanes.setdefault(x.target, []).append(x)
    names: list[str | None] = [t for t in order if t in lanes]
    names += [t for t in lanes if t is not None and t not in order]
    if None in lanes:
        names.append(None)
    waits_by_target: dict[str | None, list[Wait]] = {}
    for w in a.waits:
        waits_by_target.setdefault(w.target, []).append(w)
    until = _end_of(a)
    tl = _Rows()
    for n, target in enumerate(names):
        sub = _pack(lanes[target])
        first = tl.new()
        tl.labels.append((first, target or "server steps", "lane", None))
        for i, lane in enumerate(sub):
            r = first if i == 0 else tl.new()
            for x in lane:
                key = (x.step, x.target, x.attempt)
                end = x.end if x.end is not None else max(until, x.start)
                cls = f"b {_outcome_class(x.outcome)}" + (" cp" if key in on_path else "") + (" zero" if x.end is not None and end <= x.start else "")
                tl.add(r, f'<rect class="{cls}" x="{_num(x.start)}" y="{tl.y(r)}.1" width="{_num(end - x.start)}" data-ref="{index[key]}"/>')
        last = len(tl.elements) - 1
        for w in waits_by_target.get(target, ()):
            tl.add(last, _wait_rect(w, f"{tl.y(last)}.78", ctx, on_lane=True))
        if n % 2 == 0:
            tl.bands.append((first, last - first + 1))
    return tl


def _executions(plan: Plan, a: Arrangement) -> list[tuple[str, list[str | None]]]:
    """Every step with its executions' targets, in plan order (plus any a log holds
    that its plan does not: a history from elsewhere)."""
    out: list[tuple[str, list[str | None]]] = []
    known: set[tuple[str, str | None]] = set()
    for step, fanned in zip(plan.steps, fan_out(plan), strict=True):
        targets: list[str | None] = [plan.targets[i].name for i in fanned] if step.roles else [None]
        out.append((step.name, targets))
        known.update((step.name, t) for t in targets)
    position = {name: i for i, (name, _) in enumerate(out)}
    for x in a.attempts:
        if (x.step, x.target) not in known:
            known.add((x.step, x.target))
            if x.step not in position:
                position[x.step] = len(out)
                out.append((x.step, []))
            out[position[x.step]][1].append(x.target)
    return out


def _label(y: int, row_h: int, text: str, kind: str, extra: str | None = None) -> str:
    limit = 30 if kind == "exec" else 26
    shown = text if len(text) <= limit else text[: limit - 1] + "…"
    base = y + row_h // 2 + 4  # a 12 px font (10 px on thin rows), centred on its row
    size = "" if row_h >= 12 else ' style="font-size:10px"'
    x = 16 if kind == "exec" else 4
    tail = f'<tspan class="dim" dx="6">{_e(extra)}</tspan>' if extra else ""
    title = f"<title>{_e(text)}</title>" if shown != text else ""
    return f'<text class="{kind}" x="{x}" y="{base}"{size}>{title}{_e(shown)}{tail}</text>'


def _path_strip(tl: _Rows, r: int, a: Arrangement, index: dict, ctx: _Ctx) -> None:
    n = 0
    for link in a.critical_path:
        if link.kind == "execution":
            i = index.get((link.step, link.target, link.attempt))
            ref = f' data-ref="{i}"' if i is not None else ""
            n += 1
            cls = "cpx alt" if n % 2 == 0 else "cpx"
            tl.add(r, f'<rect class="{cls}" x="{_num(link.start)}" y="{tl.y(r)}.15" width="{_num(link.end - link.start)}"{ref}/>')
        elif link.end - link.start > 1e-9:
            tl.add(
                r,
                f'<rect class="w cpw" x="{_num(link.start)}" y="{tl.y(r)}.3" width="{_num(link.end - link.start)}" '
                f'data-c="{ctx.cause(link.cause)}"/>',
            )


def _pack(attempts: list[Attempt]) -> list[list[Attempt]]:
    """First-fit: each attempt in the first sub-lane free at its start."""
    lanes: list[list[Attempt]] = []
    ends: list[float] = []
    for x in sorted(attempts, key=lambda x: x.start):
        end = x.end if x.end is not None else math.inf
        for i, e in enumerate(ends):
            if e <= x.start + 1e-9:
                lanes[i].append(x)
                ends[i] = end
                break
        else:
            lanes.append([x])
            ends.append(end)
    return lanes


def _path_table(a: Arrangement, limit: int = 40) -> str:
    """The critical path as a table: readable without scripts."""
    links = [x for x in a.critical_path if x.kind == "execution" or x.end - x.start > 1e-9]
    if not links:
        return ""
    shown = links if len(links) <= limit else links[: limit // 2] + links[-limit // 2 :]
    rows = []
    for i, x in enumerate(shown):
        if len(links) > limit and i == limit // 2:
            rows.append(f'<tr><td colspan="4" class="dim">… {len(links) - limit} more links …</td></tr>')
        what = f"{x.step} @ {x.target or 'server'} #{x.attempt}" if x.kind == "execution" else "wait"
        rows.append(
            f"<tr><td>{_e(seconds(x.start))}</td><td>{_e(seconds(x.end - x.start))}</td><td>{_e(what)}</td><td class=dim>{_e(x.cause)}</td></tr>"
        )
    return (
        '<details class="path"><summary>Critical path: '
        f"{len(links)} links, {_e(seconds(a.makespan))}</summary>"
        '<table><thead><tr><th>start</th><th>duration</th><th>what</th><th>why it started then</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table></details>"
    )


def _outputs_by_index(page: Page) -> dict[str, list[str]]:
    """Output tails keyed by the index of the attempt element (the main arrangement)."""
    outputs = page.outputs or {}
    return {
        str(i): outputs[(x.step, x.target, x.attempt)]
        for i, x in enumerate(page.main.attempts)
        if (x.step, x.target, x.attempt) in outputs
    }


def _json_for_script(obj: object) -> str:
    """JSON that cannot end its <script> element early."""
    return msgspec.json.encode(obj).decode().replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
