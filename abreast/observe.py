"""Watching a real run: structlog lines for every event, and a live rich view.

Logs go to stderr: `console` (human) or `json` (one object per line, for collectors).
Deployment and step events and unsuccessful attempts are logged at info; every
execution start and success at debug (`--verbose`). On a terminal a live view shows a
bar per active step, its running executions, and what waits for which lock.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.core import ACTIVE, E_FAILED, E_PENDING, E_RUNNING, E_SUCCEEDED, SERVER, Core
from engine.events import Event, ExecutionFinished, ExecutionStarted

if TYPE_CHECKING:
    import structlog


def log_level(verbose: bool, quiet: bool) -> int:
    return logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO


def configure_logging(fmt: str, verbose: bool, quiet: bool) -> structlog.typing.FilteringBoundLogger:
    import structlog  # here, not above: a quiet run that logs nothing never pays for it

    level = log_level(verbose, quiet)
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(), pad_event=22)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),  # the live view's, when it shows
        cache_logger_on_first_use=True,
    )
    return structlog.get_logger("abreast")


SKIP_FIELDS = ("deployment", "seq", "wall", "plan", "policy", "options")


def event_logger(
    logger: Callable[[], structlog.typing.FilteringBoundLogger], level: int
) -> Callable[[list[Event]], None]:
    """A runtime `on_events` callback that logs each event at or above `level`.

    `logger` makes the logger; it is called when the first line is logged (importing
    and configuring structlog is a tenth of a second, which `--quiet` runs that log
    nothing do not need to spend)."""
    log = None

    def on_events(events: list[Event]) -> None:
        nonlocal log
        for ev in events:
            kind = type(ev)
            if kind is ExecutionStarted or (kind is ExecutionFinished and ev.outcome == "succeeded"):
                method, at_level = "debug", logging.DEBUG
            elif kind is ExecutionFinished and ev.outcome in ("failed", "timed_out"):
                method, at_level = "warning", logging.WARNING
            else:
                method, at_level = "info", logging.INFO
            if at_level < level:
                continue
            if log is None:
                log = logger()
            fields = {k: getattr(ev, k) for k in ev.__struct_fields__ if k not in SKIP_FIELDS}
            fields = {k: v for k, v in fields.items() if v is not None}
            fields["at"] = round(ev.at, 3)
            getattr(log, method)(ev.__struct_config__.tag, deployment=ev.deployment, **fields)

    return on_events


class LiveView:
    """A live picture of the deployment, redrawn from the core's state."""

    def __init__(self, core: Core, console=None):  # noqa: ANN001 - a rich Console
        from rich.console import Console
        from rich.live import Live

        self.core = core
        self.console = console or Console(stderr=True)
        self.live = Live(self.render(), console=self.console, refresh_per_second=4, transient=False, redirect_stderr=True)

    def __enter__(self) -> LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.update(self.render())
        self.live.__exit__(None, None, None)

    def update(self, events: list[Event]) -> None:
        self.live.update(self.render())

    def render(self):  # noqa: ANN201 - a rich Group
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        core = self.core
        done = sum(1 for s in core.step_state if s >= 2)
        head = Text(f"{core.deployment}  {done}/{core.n_steps} steps done", style="bold")
        table = Table.grid(padding=(0, 1))
        holders = self._holders()
        for s in core.active:
            states = core.exec_state[s]
            total = len(states)
            finished = sum(1 for st in states if st >= E_SUCCEEDED)
            failed = sum(1 for st in states if st == E_FAILED)
            running = [self._target(s, k) for k, st in enumerate(states) if st == E_RUNNING]
            waits = []
            for k, st in enumerate(states):
                if st != E_PENDING or len(waits) >= 3:
                    continue
                t = core.exec_targets[s][k]
                if core.running[s] >= core.window[s]:
                    break  # the window is full: nothing more of this step can start
                if t != SERVER and holders.get(t):
                    waits.append(f"{core.target_names[t]} waits for the lock held by {', '.join(sorted(holders[t]))}")
            status = Text(f"{finished}/{total}", style="red" if failed else "")
            detail = []
            if running:
                detail.append("running: " + ", ".join(running[:6]) + (" …" if len(running) > 6 else ""))
            detail += waits
            table.add_row(
                Text(core.step_names[s], style="bold" if core.step_state[s] == ACTIVE else ""),
                ProgressBar(total=max(total, 1), completed=finished, width=24),
                status,
                Text("; ".join(detail), overflow="ellipsis", no_wrap=True),
            )
        return Group(head, table)

    def _target(self, s: int, k: int) -> str:
        t = self.core.exec_targets[s][k]
        return self.core.target_names[t] if t != SERVER else "server"

    def _holders(self) -> dict[int, set[str]]:
        core = self.core
        out: dict[int, set[str]] = {}
        for s, k, _ in core.running_executions():
            t = core.exec_targets[s][k]
            if t != SERVER:
                out.setdefault(t, set()).add(core.step_names[s])
        return out
