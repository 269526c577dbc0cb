"""The live view and the event logs of a real run."""

from __future__ import annotations

import io
import json
import logging

from rich.console import Console

from abreast.observe import LiveView, event_logger
from engine.core import Core
from tests.helpers import plan_of


def test_the_live_view_shows_progress_running_targets_and_who_holds_a_lock():
    plan = plan_of("""
        targets: [{name: web-01, roles: [web]}, {name: web-02, roles: [web]}, {name: web-03, roles: [web]}]
        steps:
          - {name: deploy app, roles: [web], window: 2}
          - {name: warm cache, start: with-previous, roles: [web]}
    """)
    core = Core(plan, "rel-7")
    core.begin(0.0)
    core.take_starts()
    core.finish(0, 0, 1, "succeeded", 1.0)
    core.advance(1.0)
    out = io.StringIO()
    view = LiveView(core, console=Console(file=out, width=200, force_terminal=False))
    view.live.console.print(view.render())
    text = out.getvalue()
    assert "rel-7  0/2 steps done" in text
    # At 0 deploy app took web-01 and web-02 (window 2) and warm cache took web-03.
    # At 1 web-01 is done: warm cache takes it; deploy app's web-03 waits for warm cache.
    deploy = next(line for line in text.splitlines() if line.startswith("deploy app"))
    warm = next(line for line in text.splitlines() if line.startswith("warm cache"))
    assert "1/3 running: web-02; web-03 waits for the lock held by warm cache" in deploy
    assert "0/3 running: web-01, web-03; web-02 waits for the lock held by deploy app" in warm


def test_events_are_logged_as_json_lines_at_their_levels(capsys):
    import structlog

    from abreast.observe import configure_logging

    log = configure_logging("json", verbose=False, quiet=False)
    plan = plan_of("steps: [{name: a}]")
    core = Core(plan, "d")
    events = core.begin(0.0)
    events += core.finish(0, 0, 1, "failed", 2.5, 3, "exit status 3")
    event_logger(lambda: log, logging.INFO)(events)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    kinds = [(d["event"], d["level"]) for d in lines]
    assert ("deployment.started", "info") in kinds and ("step.started", "info") in kinds
    assert ("execution.started", "debug") not in kinds  # debug is below the level
    failed = next(d for d in lines if d["event"] == "execution.finished")
    assert (failed["level"], failed["step"], failed["exit_code"], failed["at"]) == ("warning", "a", 3, 2.5)
    structlog.reset_defaults()


def test_a_logger_is_made_only_when_a_line_reaches_the_level():
    made = []
    core = Core(plan_of("steps: [{name: a}]"), "d")
    on_events = event_logger(lambda: made.append(1), logging.WARNING)  # --quiet
    on_events(core.begin(0.0) + core.finish(0, 0, 1, "succeeded", 1.0))
    assert made == []  # nothing at warning or above: structlog is never configured


def test_the_live_view_prints_names_that_look_like_markup_as_text():
    plan = plan_of("""
        targets: [{name: "[red]web", roles: [web]}]
        steps:
          - {name: "[/oops]", roles: [web]}
          - {name: "[bold]warm", start: with-previous, roles: [web]}
    """)
    core = Core(plan, "[/d]")
    core.begin(0.0)
    out = io.StringIO()
    view = LiveView(core, console=Console(file=out, width=200, force_terminal=False))
    view.live.console.print(view.render())
    text = out.getvalue()
    assert "[/d]  0/2 steps done" in text
    assert "[/oops]" in text and "running: [red]web" in text
    assert "[red]web waits for the lock held by [/oops]" in text
