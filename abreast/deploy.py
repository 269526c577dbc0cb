"""`abreast run` and `abreast resume`: real deployments, recorded in the event store."""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn

import msgspec
import typer

from abreast.common import EXIT_BAD_INPUT, EXIT_CANCELLED, DbOption, app, bad_input, check_id, check_speed, open_db, outcome_exit


class LogFormat(str, Enum):
    console = "console"
    json = "json"


SpeedOption = Annotated[float, typer.Option(help="With --dry-run: how many times faster than the simulated durations.", min=0.0001, callback=check_speed)]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Run nothing on the targets: sleep each execution's simulated duration instead.")
]
LogFormatOption = Annotated[LogFormat, typer.Option("--log-format", help="Logs on stderr: console for people, json for collectors.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Also log every execution that starts or succeeds.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Log only warnings and errors; no live view.")]


def new_deployment_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{os.urandom(3).hex()}"


def adapters_for(plan, dry_run: bool, speed: float, seed: int, store: Path | None = None):  # noqa: ANN001, ANN201
    """The deployment's adapters (adapters/registry.py): each target's `adapter`, or
    dry-run for all with --dry-run; unknown names and bad target fields exit 2 here,
    before anything runs. The local adapter keeps its records where `store`'s
    deployments keep theirs."""
    from adapters.registry import AdapterProblem, Adapters, needed
    from engine.adapter import AdapterSetup
    from simulator.durations import DurationModel

    folder = Path(plan.source).parent if plan.source else Path.cwd()
    setup = AdapterSetup(plan, folder, seed, speed, store=store)
    if "dry-run" in needed(plan, dry_run):
        model = DurationModel(plan, seed)
        model.check()  # MissingDuration: the caller reports it as bad input
        setup = AdapterSetup(plan, folder, seed, speed, model.duration, model.fails, store)
    try:
        return Adapters(plan, setup, dry_run)
    except AdapterProblem as e:
        bad_input(str(e))


def _drive(core, store, plan, options: dict, log_format: LogFormat, verbose: bool, quiet: bool, resume_at: float = 0.0, log=()) -> str:  # noqa: ANN001
    import trio

    from abreast.observe import LiveView, configure_logging, event_logger, log_level
    from engine.runtime import INSTANT, Runtime
    from simulator.durations import MissingDuration

    try:
        adapter_for = adapters_for(
            plan, options.get("dry_run", False), options.get("speed", 1.0), options.get("seed", 0), store.path
        )
    except MissingDuration as e:
        bad_input(f"{plan.source}: {e} (a dry run sleeps each execution's simulated duration)")
    live = LiveView(core) if (sys.stderr.isatty() and not quiet and log_format is LogFormat.console) else None
    level = log_level(verbose, quiet)
    # Logs go through the live view's console when it shows (configured inside it, when
    # the first line is logged), and then only warnings and errors: the view shows the
    # progress.
    log_quiet = quiet or (live is not None and not verbose)
    if live is not None and not verbose:
        level = max(level, logging.WARNING)
    logger = functools.cache(lambda: configure_logging(log_format.value, verbose, log_quiet))
    log_events = event_logger(logger, level)
    last_draw = 0.0

    silent = False

    def guarded(show):  # noqa: ANN001, ANN202
        """Whatever shows progress stops quietly if the terminal went away (SIGHUP):
        the deployment goes on, recorded."""

        def call(*args) -> None:  # noqa: ANN002
            nonlocal silent
            if silent:
                return
            try:
                show(*args)
            except OSError:
                silent = True

        return call

    @guarded
    def on_events(events) -> None:  # noqa: ANN001
        nonlocal last_draw
        log_events(events)
        if live is not None and time.monotonic() - last_draw > 0.2:
            last_draw = time.monotonic()
            live.update(events)

    workdir = Path(plan.source).parent if plan.source else Path.cwd()
    # Commands run in the scenario's folder (SPEC §2); the orchestrator works there too,
    # so the local adapter can start them with posix_spawn (see adapters/local.py).
    # Every path given on the command line has been opened or resolved by now.
    try:
        os.chdir(workdir)
    except OSError as e:
        bad_input(f"{plan.source}: cannot enter the scenario's folder {workdir}: {e.strerror}")
    scale = options.get("speed", 1.0) if options.get("dry_run", False) else 1.0
    @guarded
    def on_orphans(groups: int) -> None:
        logger().warning(
            "orphans.stopped", deployment=core.deployment, process_groups=groups,
            note="what was left of attempts whose outcome was not recorded was stopped before they run again",
        )

    @guarded
    def on_adopted(how: str, step: str, target: str | None, attempt: int) -> None:
        log = logger().warning if how == "unknown" else logger().info
        log("execution.adopted", deployment=core.deployment, step=step, target=target, attempt=attempt, found=how)

    # A real run gathers only the completions that are already in when it looks; a dry
    # run models time, and gathers what falls on one instant (1e-9 s) like the simulator.
    runtime = Runtime(
        core, store, adapter_for, workdir, on_events=on_events, resume_at=resume_at, options=options,
        time_scale=scale, gather=INSTANT if options.get("dry_run", False) else 0.0, on_orphans=on_orphans,
        log=log, on_adopted=on_adopted,
    )
    # The adapters close when the deployment ends, however it ends (ssh: the master
    # connections).
    try:
        if live is None:
            outcome = trio.run(adapter_for.closing, runtime.run, True)
        else:
            live.__enter__()
            try:
                outcome = trio.run(adapter_for.closing, runtime.run, True)
            finally:
                guarded(lambda: live.__exit__(None, None, None))()
    finally:
        from abreast import signals

        signals.settle()
    return _finish(outcome, core, quiet)


def _finish(outcome: str, core, quiet: bool) -> str:  # noqa: ANN001
    """One closing line on stderr for people; scripts read the exit code."""
    if not quiet:
        from abreast.render import seconds

        at = core.finished_event.at if core.finished_event is not None else None
        try:
            typer.echo(f"deployment {core.deployment} {outcome} after {seconds(at)}", err=True)
        except OSError:
            pass  # no terminal any more
    return outcome





@app.command(
    epilog=(
        "Examples:\n\n"
        "  abreast run scenarios/web-farm-rolling.yaml --dry-run --speed 60\n\n"
        "  abreast run deploy.yaml --id release-42 --db /var/lib/abreast/abreast.db --log-format json"
    )
)
def run(
    scenario: Annotated[Path, typer.Argument(help="Scenario file (.yaml, .yml, .toml, .json).")],
    id: Annotated[str | None, typer.Option("--id", help="The deployment's id (default: a new one).", callback=check_id)] = None,
    db: DbOption = None,
    dry_run: DryRunOption = False,
    speed: SpeedOption = 1.0,
    seed: Annotated[int, typer.Option(help="With --dry-run: seed for sampled durations and failures.")] = 0,
    log_format: LogFormatOption = LogFormat.console,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """Run a deployment for real and record it; prints the deployment id.

    Exit 0 succeeded, 1 failed, 2 bad input or an event store that cannot be written,
    130 cancelled (Ctrl-C, SIGTERM or SIGHUP: running executions are stopped and the
    log ends `cancelled`). Killing abreast itself (kill -9) stops no command: `abreast
    resume ID` adopts them."""
    from engine.core import Core
    from engine.scenario import ScenarioError, load, warnings

    try:
        plan = load(scenario)
    except ScenarioError as e:
        bad_input(f"error: {e}")
    for w in warnings(plan):
        typer.echo(f"warning: {scenario}: {w}", err=True)
    plan = msgspec.structs.replace(plan, source=str(scenario.resolve()))
    store = open_db(db)
    deployment = id or new_deployment_id()
    if store.exists(deployment):
        bad_input(f"deployment {deployment!r} already exists in {store.path}; continue it with `abreast resume {deployment}`")
    typer.echo(deployment)
    sys.stdout.flush()
    options = {"dry_run": dry_run, "speed": speed, "seed": seed}
    _drive_and_exit(Core(plan, deployment), store, plan, options, log_format, verbose, quiet)


@app.command(
    epilog=(
        "Examples:\n\n"
        "  abreast resume 20261127-101500-3fa2c1\n\n"
        "  abreast resume release-42 --db handed-over.db --trust-commands"
    )
)
def resume(
    id: Annotated[str, typer.Argument(help="The deployment to continue.")],
    db: DbOption = None,
    trust_commands: Annotated[
        bool,
        typer.Option(
            "--trust-commands",
            help="Run the commands of a deployment that did not start from this store (it came in by "
            "`history import`); they are shown first.",
        ),
    ] = False,
    log_format: LogFormatOption = LogFormat.console,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """Continue a deployment whose orchestrator died, from its event log.

    Attempts the log shows started but not finished are adopted from the records they
    kept: one still running is waited for, one that ended meanwhile is recorded as it
    ended, one that never started runs now. Only an attempt whose outcome cannot be
    known is recorded `interrupted` and runs again. Nothing that finished runs again.
    A deployment whose orchestrator is still alive is refused (exit 2, naming it)."""
    from engine.core import Core, IllegalMove
    from engine.events import DeploymentFinished, DeploymentStarted
    from engine.lease import may_take_over
    from engine.plan import plan_from_builtins

    store = open_db(db)
    events = store.read(id)
    if not events:
        bad_input(f"no deployment {id!r} in {store.path}")
    first, last = events[0], events[-1]
    if isinstance(last, DeploymentFinished):
        bad_input(f"deployment {id!r} already ended {last.outcome}; nothing to resume")
    owner = store.owner(id)
    if owner is not None and may_take_over(owner) is None:
        bad_input(f"deployment {id!r} is being run by {owner.describe()}; it cannot be resumed while that runs")
    if not isinstance(first, DeploymentStarted):
        bad_input(f"deployment {id!r}: its log does not begin with deployment.started")
    try:
        plan = plan_from_builtins(first.plan)
        core = Core(plan, id).fold(events)
    except (msgspec.ValidationError, IllegalMove) as e:
        bad_input(f"deployment {id!r}: its log cannot be folded: {e}")
    options = dict(first.options)
    if owner is None:
        _check_trust(id, store, plan, options, trust_commands)
    _drive_and_exit(
        core, store, plan, options, log_format, verbose, quiet, resume_at=last.at + _wall_gap(last.wall), log=events
    )


def _check_trust(id: str, store, plan, options: dict, trust: bool) -> None:  # noqa: ANN001
    """A deployment with no owner lease in this store never ran from it: it came in by
    `history import` (or from an abreast before leases), so its commands are whatever
    the file someone handed over says. Show them; run them only with --trust-commands."""
    if options.get("dry_run", False):
        return  # a rehearsal runs no command
    commands = [(s.name, s.run) for s in plan.steps if s.run is not None]
    if not commands:
        return
    lines = [f"deployment {id!r} did not start from {store.path} (it came in by `history import`); resuming it runs:"]
    lines += [f"  {name}: {command}" for name, command in commands]
    if not trust:
        typer.echo("\n".join(lines), err=True)
        bad_input(f"deployment {id!r}: refusing to run commands from an imported history; check them, then resume with --trust-commands")
    typer.echo("\n".join(lines), err=True)


def _drive_and_exit(core, store, plan, options: dict, log_format: LogFormat, verbose: bool, quiet: bool, resume_at: float = 0.0, log=()) -> NoReturn:  # noqa: ANN001
    """Run the deployment to its end, close the store, exit with the outcome's code.

    A store that fails on the way (disk full, a read-only or replaced file, another
    orchestrator took the deployment over) is one line and exit 2; the commands that
    had started keep running under their records, for `resume` to adopt."""
    from engine.runtime import CancelledBeforeStart
    from engine.store import LeaseHeld, StoreError

    try:
        outcome = _drive(core, store, plan, options, log_format, verbose, quiet, resume_at=resume_at, log=log)
    except CancelledBeforeStart as e:
        typer.echo(f"abreast: {e}", err=True)
        raise typer.Exit(EXIT_CANCELLED) from None
    except StoreError as e:
        hint = ""
        if core.started and not core.done and not isinstance(e, LeaseHeld):
            hint = f" (commands already started keep running; `abreast resume {core.deployment}` adopts them)"
        typer.echo(f"error: {e}{hint}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    finally:
        store.close()
    raise typer.Exit(outcome_exit(outcome))


def _wall_gap(wall: str | None) -> float:
    """Seconds of wall time since `wall` (the time the orchestrator was down), >= 0."""
    if not wall:
        return 0.0
    try:
        return max(0.0, (datetime.now(UTC) - datetime.fromisoformat(wall)).total_seconds())
    except ValueError:
        return 0.0


__all__ = ["run", "resume", "EXIT_BAD_INPUT"]
